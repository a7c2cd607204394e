"""CarDD evaluation."""
