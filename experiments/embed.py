"""Embeds images with a trained run.

  python -m experiments.embed --workdir runs/default/seed_0 --input images.npy --out embeddings.npy
  python -m experiments.embed --workdir runs/omniglot/seed_0 --input some_folder/ --out embeddings.npy

`--input` is a `.npy` array of uint8 images `[N, H, W, C]` (or `[N, H, W]`) as the dataset stores them, or a folder of
image files (png / jpg / bmp, sorted by name; `--out` then also gets `<out>.files.txt` with the order). Images are
brought to the run's stored image size and channels, inverted for Omniglot (as its loader does), preprocessed with the
run's fitted evaluation transform and embedded by the restored network (`metric_jax.train.restore_run`) in fixed-size
batches (`metric_jax.evaluation.extract_embeddings`).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


def read_folder(folder: str, image_shape) -> tuple:
  """`(uint8 [N, H, W, C], file names)` of the image files in `folder`, resized to `image_shape` (H, W, C)."""
  from PIL import Image
  h, w, ch = (int(v) for v in image_shape)
  names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_SUFFIXES))
  if not names:
    raise ValueError(f"`--input` folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)}).")
  out = []
  for name in names:
    with Image.open(os.path.join(folder, name)) as im:
      im = im.convert("L" if ch == 1 else "RGB")
      if im.size != (w, h):
        im = im.resize((w, h), Image.BILINEAR)
      a = np.asarray(im, np.uint8)
    out.append(a[..., None] if a.ndim == 2 else a)
  return np.stack(out), names


def load_images(path: str, image_shape, dataset: str) -> tuple:
  """uint8 `[N, H, W, C]` in the run's stored layout (Omniglot inverted as its loader does), and file names."""
  names = None
  if os.path.isdir(path):
    images, names = read_folder(path, image_shape)
    if dataset == "omniglot":
      images = 255 - images
  else:
    images = np.load(path)
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4:
      raise ValueError(f"`--input` {path} must hold [N, H, W, C] or [N, H, W] images, got shape {images.shape}.")
    if images.dtype != np.uint8:
      raise ValueError(f"`--input` {path} must hold uint8 images as the dataset stores them, got {images.dtype}.")
    if tuple(images.shape[1:]) != tuple(image_shape):
      from metric_jax.data.preprocessing import resize_uint8
      if images.shape[3] != image_shape[2]:
        raise ValueError(f"`--input` images have {images.shape[3]} channels; the run was trained on "
                         f"{image_shape[2]}.")
      images = resize_uint8(images, tuple(image_shape[:2]))
  return images, names


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="a run directory (or a workdir with one seed_* run)")
  parser.add_argument("--input", required=True, help="images.npy or a folder of image files")
  parser.add_argument("--out", required=True, help="where to save the float32 [N, D] embeddings (.npy)")
  parser.add_argument("--batch_size", type=int, default=256)
  args = parser.parse_args(argv)
  from metric_jax import train
  run = train.restore_run(args.workdir)
  images, names = load_images(args.input, run.info.get("image_shape", run.info["input_shape"]), run.info["dataset"])
  from metric_jax import evaluation
  emb = evaluation.extract_embeddings(run.trainer.embed_fn(run.state), run.test_transform(images),
                                      batch_size=args.batch_size)
  np.save(args.out, emb)
  if names is not None:
    with open(args.out + ".files.txt", "w") as f:
      f.write("\n".join(names) + "\n")
  print(f"{emb.shape[0]} embeddings of dimension {emb.shape[1]} -> {args.out}")


if __name__ == "__main__":
  main()
