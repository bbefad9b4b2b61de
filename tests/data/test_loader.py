"""BatchLoader: batch contents, dtypes, padding, reproducible transforms, resumption, prefetch thread."""

import numpy as np
import pytest

from metric_jax.data import BatchLoader, ClassAccumulatingSampler, PKSampler, RandomSampler

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(60, 6, 5, 3), dtype=np.uint8)
LABELS = np.repeat(np.arange(12), 5).astype(np.int64)


def noisy_transform(images, rng):
  return images.astype(np.float32) / 255.0 + rng.normal(size=images.shape).astype(np.float32)


def test_batches_gather_the_sampled_rows_scaled_to_unit_interval():
  sampler = PKSampler(LABELS, 3, 2, seed=0)
  loader = BatchLoader(IMAGES, LABELS, sampler, prefetch=2)
  try:
    for step, batch in zip(range(4), loader):
      idx = sampler.indices(step)
      assert batch["image"].dtype == np.float32 and batch["image"].shape == (6, 6, 5, 3)
      assert batch["label"].dtype == np.int32 and batch["valid"].dtype == np.bool_
      np.testing.assert_allclose(batch["image"], IMAGES[idx] / 255.0, rtol=1e-6)
      np.testing.assert_array_equal(batch["label"], LABELS[idx])
      assert batch["valid"].all()
      assert loader.step == step + 1
  finally:
    loader.close()


def test_padding_rows_are_invalid_zero_and_label_minus_one():
  sampler = ClassAccumulatingSampler(LABELS, 8, seed=0)  # classes of 5: one class per batch, 3 padding slots
  batch = BatchLoader(IMAGES, LABELS, sampler, prefetch=0).make_batch(0)
  idx = sampler.indices(0)
  np.testing.assert_array_equal(batch["valid"], idx >= 0)
  assert (~batch["valid"]).sum() == 3
  assert np.all(batch["image"][~batch["valid"]] == 0) and np.all(batch["label"][~batch["valid"]] == -1)


def test_resume_from_saved_step_gives_identical_batches_including_augmentation():
  sampler = RandomSampler(60, 10, seed=3)
  first = BatchLoader(IMAGES, LABELS, sampler, transform=noisy_transform, seed=7, prefetch=3)
  batches = [next(first) for _ in range(9)]
  first.close()
  stopped = BatchLoader(IMAGES, LABELS, sampler, transform=noisy_transform, seed=7)
  for _ in range(5):
    next(stopped)
  saved = stopped.state()
  stopped.close()
  assert saved == {"step": 5}
  resumed = BatchLoader(IMAGES, LABELS, sampler, transform=noisy_transform, seed=7, start_step=saved["step"])
  for step in range(5, 9):
    batch = next(resumed)
    np.testing.assert_array_equal(batch["image"], batches[step]["image"])
    np.testing.assert_array_equal(batch["label"], batches[step]["label"])
  resumed.close()
  other_seed = BatchLoader(IMAGES, LABELS, sampler, transform=noisy_transform, seed=8, prefetch=0)
  assert not np.array_equal(next(other_seed)["image"], batches[0]["image"])


def test_prefetch_and_no_prefetch_agree_and_close_restarts_at_step():
  sampler = PKSampler(LABELS, 4, 2, seed=1)
  a = BatchLoader(IMAGES, LABELS, sampler, prefetch=0)
  b = BatchLoader(IMAGES, LABELS, sampler, prefetch=4)
  for _ in range(3):
    np.testing.assert_array_equal(next(a)["label"], next(b)["label"])
  b.close()
  np.testing.assert_array_equal(next(b)["image"], next(a)["image"])  # continues at step 3 after close()
  b.close()


def test_transform_errors_reach_the_consumer():
  def broken(images, rng):
    raise RuntimeError("transform failed")
  loader = BatchLoader(IMAGES, LABELS, RandomSampler(60, 4, seed=0), transform=broken)
  with pytest.raises(RuntimeError, match="transform failed"):
    next(loader)


def test_bad_arguments_name_the_argument():
  sampler = RandomSampler(60, 4, seed=0)
  with pytest.raises(ValueError, match="labels"):
    BatchLoader(IMAGES, LABELS[:10], sampler)
  with pytest.raises(ValueError, match="images"):
    BatchLoader(IMAGES[..., 0], LABELS, sampler)
  with pytest.raises(ValueError, match="start_step"):
    BatchLoader(IMAGES, LABELS, sampler, start_step=-1)
