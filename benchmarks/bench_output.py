"""How every benchmark reports: the JSON result on stdout and, with ``--output``, in a file (folders created)."""
import json
import os


def emit_json(result, output=None, indent=1):
    text = json.dumps(result, indent=indent)
    print(text)
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "w") as f:
            f.write(text + "\n")
