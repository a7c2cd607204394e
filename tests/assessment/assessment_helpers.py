"""Helpers shared by the assessment, demo and service tests (imported through tests/assessment/conftest.py)."""
import io
import os

import numpy as np
import torch

# On top of the lead's TINY_OVERRIDES: an R-18 backbone, thin heads and 3 detections per image (the Visualizer
# costs ~50 ms per drawn instance on CPU).
TINY_DETECTOR_OVERRIDES = [
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "16",
    "INPUT.MIN_SIZE_TEST", "64",
    "INPUT.MAX_SIZE_TEST", "128",
    "TEST.DETECTIONS_PER_IMAGE", "3",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
]


# A 6-class model of car parts (not CarDD's damage classes): the same class count, other names.
PARTS = ["door", "front_bumper", "hood", "fender", "headlamp", "damage"]


def save_detector_checkpoint(cfg, path, names=None):
    """A random-init model of ``cfg`` saved like tools/train_net.py checkpoints (``thing_classes`` when given)."""
    from detectron2.modeling import build_model

    import cardd_d2  # noqa: F401  (registers cardd's models)
    from cardd_d2.checkpoint.class_names import THING_CLASSES_KEY

    torch.manual_seed(0)
    obj = {"model": build_model(cfg).state_dict(), "iteration": 0}
    if names is not None:
        obj[THING_CLASSES_KEY] = list(names)
    torch.save(obj, path)
    return path


class FakePredictor:
    """Deterministic stand-in for DefaultPredictor: one instance per entry of ``spec`` [(class_id, score), ...].

    Instance k is a square of side 4 + 2k at (2k, 2k) in the image. Counts calls.
    """

    def __init__(self, spec=((1, 0.9), (2, 0.6), (0, 0.8), (2, 0.95), (5, 0.7))):
        self.spec = list(spec)
        self.calls = 0

    def __call__(self, image_bgr):
        from detectron2.structures import Boxes, Instances

        assert image_bgr.dtype == np.uint8 and image_bgr.ndim == 3 and image_bgr.shape[2] == 3
        self.calls += 1
        h, w = image_bgr.shape[:2]
        n = len(self.spec)
        masks = torch.zeros((n, h, w), dtype=torch.bool)
        boxes = []
        for k in range(n):
            s = 4 + 2 * k
            x0 = y0 = min(2 * k, max(0, min(h, w) - s))
            masks[k, y0:y0 + s, x0:x0 + s] = True
            boxes.append([x0, y0, min(w, x0 + s), min(h, y0 + s)])
        inst = Instances((h, w))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.tensor([s for _, s in self.spec], dtype=torch.float32)
        inst.pred_classes = torch.tensor([c for c, _ in self.spec], dtype=torch.int64)
        inst.pred_masks = masks
        return {"instances": inst}


def constant_gate(p_damaged: float, threshold: float = 0.9):
    """A DamageGate whose classifier returns P(damaged) = p_damaged for every image."""
    from cardd_d2.assessment.classifier import build_classifier
    from cardd_d2.assessment.gate import DamageGate

    model = build_classifier("tiny")
    last = model.classifier[-1]
    with torch.no_grad():
        last.weight.zero_()
        p = min(max(p_damaged, 1e-6), 1 - 1e-6)
        last.bias.copy_(torch.tensor([0.0, float(np.log(p / (1 - p)))]))
    return DamageGate(model, input_size=32, discard_threshold=threshold)


def rgb_image(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((h, w, 3)) * 255).astype(np.uint8)


def save(img_array, path, **kw):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(img_array).save(path, **kw)
    return path


def write_problem_files(folder):
    """One file per problem case; returns {case: path}. Sizes are tiny except the >10,000 px-wide strip."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    p = {}
    p["good"] = save(rgb_image(seed=1), os.path.join(folder, "good.jpg"))
    p["gray"] = save(rgb_image(seed=2)[:, :, 0], os.path.join(folder, "gray.png"))
    rgba = np.dstack([rgb_image(seed=3), np.full((48, 64), 128, np.uint8)])
    p["rgba"] = save(rgba, os.path.join(folder, "rgba.png"))
    p["png16"] = os.path.join(folder, "deep16.png")
    Image.fromarray(np.full((40, 50), 65535, np.uint16)).save(p["png16"])
    p["cmyk"] = os.path.join(folder, "cmyk.jpg")
    Image.fromarray(rgb_image(seed=4)).convert("CMYK").save(p["cmyk"], format="JPEG")
    p["exif"] = os.path.join(folder, "rotated.jpg")
    im = Image.fromarray(rgb_image(h=20, w=40, seed=5))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    im.save(p["exif"], exif=exif.tobytes())
    p["huge"] = os.path.join(folder, "huge.png")
    Image.fromarray(np.full((8, 10050), 200, np.uint8)).save(p["huge"])
    buf = io.BytesIO()
    Image.fromarray(rgb_image(h=64, w=64, seed=6)).save(buf, format="JPEG", quality=95)
    p["truncated"] = os.path.join(folder, "truncated.jpg")
    with open(p["truncated"], "wb") as f:
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    p["corrupt"] = os.path.join(folder, "corrupt.jpg")
    with open(p["corrupt"], "wb") as f:
        f.write(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    p["text_as_jpg"] = os.path.join(folder, "notes_renamed.jpg")
    with open(p["text_as_jpg"], "w") as f:
        f.write("this is not an image\n")
    p["empty"] = os.path.join(folder, "empty.png")
    open(p["empty"], "wb").close()
    p["txt"] = os.path.join(folder, "readme.txt")
    with open(p["txt"], "w") as f:
        f.write("notes\n")
    p["dup_a"] = save(rgb_image(seed=7), os.path.join(folder, "a", "car.jpg"))
    p["dup_b"] = save(rgb_image(seed=8), os.path.join(folder, "b", "car.jpg"))
    return p
