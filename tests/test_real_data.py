"""Checks of the real DSB2018 data that `make data` unpacked (skipped where it is absent)."""

import numpy as np
import pytest

from unet_tf import config, data

pytestmark = [
    pytest.mark.skipif(
        not config.TRAIN_DIR.is_dir(), reason="DSB2018 is not unpacked (run `make data`)"
    ),
    # Six stage1_train images have 1-2 pixels claimed by two masks: known and documented.
    pytest.mark.filterwarnings("ignore::unet_tf.data.MaskWarning"),
]


def test_make_data_yields_the_stage1_images():
    train = data.list_sample_dirs(config.TRAIN_DIR)
    test = data.list_sample_dirs(config.TEST_DIR)
    # 664 in the community-fixed release; the original Kaggle/BBBC038 release has 670.
    assert len(train) in (664, 670)
    assert len(test) == 65
    assert all((sample / "masks").is_dir() for sample in train)
    assert not any((sample / "masks").exists() for sample in test)


@pytest.mark.slow
def test_committed_validation_split_is_valid_and_reproducible():
    train_ids, validation_ids = data.train_validation_ids(config.TRAIN_DIR, config.VALIDATION_IDS)
    assert not set(train_ids) & set(validation_ids)
    assert 0.10 <= len(validation_ids) / (len(train_ids) + len(validation_ids)) <= 0.15
    index = data.build_index(config.TRAIN_DIR, cache_dir=config.LABEL_CACHE)
    assert set(index.imaging_type) == set(data.IMAGING_TYPES)
    assert data.make_validation_split(index, fraction=0.12, seed=2018) == validation_ids
    assert index.nucleus_count.min() >= 1
    validation_types = index.set_index("image_id").loc[validation_ids, "imaging_type"]
    assert set(validation_types) == set(data.IMAGING_TYPES)


def test_real_samples_read_as_promised():
    validation_ids = data.load_ids(config.VALIDATION_IDS)
    for image_id, image, labels in data.load_samples(config.TRAIN_DIR, ids=validation_ids[:4]):
        assert image.dtype == np.float32 and image.shape[-1] == 3
        assert labels.dtype == np.int32 and labels.shape == image.shape[:2]
        assert labels.max() == len(data.mask_files(config.TRAIN_DIR / image_id))
