"""Image data: reading labelled image records and opening their refs (builtin sets, `datasets` directories, files),
preprocessing, training and evaluation transforms with RandAugment, and CutMix/MixUp batch mixing."""

from tuneforge.data.images.batch_mixing import mix_batch
from tuneforge.data.images.builtin import BUILTIN_IMAGE_SETS, builtin_image_labels
from tuneforge.data.images.opening import check_images
from tuneforge.data.images.preprocessing import Preprocessing
from tuneforge.data.images.randaugment import RANDAUGMENT_OPS, rand_augment
from tuneforge.data.images.records import limit_per_class
from tuneforge.data.images.refs import open_image, read_image_records
from tuneforge.data.images.transforms import eval_transform, train_transform

__all__ = [
    "BUILTIN_IMAGE_SETS",
    "RANDAUGMENT_OPS",
    "Preprocessing",
    "builtin_image_labels",
    "check_images",
    "eval_transform",
    "limit_per_class",
    "mix_batch",
    "open_image",
    "rand_augment",
    "read_image_records",
    "train_transform",
]
