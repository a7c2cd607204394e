"""Training hooks: a tqdm progress bar on the main process."""
from detectron2.engine import HookBase
from detectron2.utils import comm
from tqdm import tqdm


class ProgressBarHook(HookBase):
    """Shows iterations done / total, the total loss and the learning rate as a tqdm bar (rank 0 only)."""

    def __init__(self, max_iter: int, refresh_every: int = 1):
        self._max_iter = max_iter
        self._refresh_every = max(1, refresh_every)
        self._bar = None

    def before_train(self):
        if comm.is_main_process():
            self._bar = tqdm(total=self._max_iter, initial=self.trainer.start_iter, desc="train", unit="it",
                             dynamic_ncols=True)

    def after_step(self):
        if self._bar is None:
            return
        self._bar.update(1)
        if self.trainer.iter % self._refresh_every == 0:
            storage = self.trainer.storage
            postfix = {}
            if "total_loss" in storage.histories():
                postfix["loss"] = f"{storage.history('total_loss').median(10):.3f}"
            if "lr" in storage.histories():
                postfix["lr"] = f"{storage.history('lr').latest():.2e}"
            self._bar.set_postfix(postfix, refresh=False)

    def after_train(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
