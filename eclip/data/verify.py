"""Geometric verification of near-duplicate candidates: is the second image the first one, edited?

The fixed descriptor compares content boxes, so a crop that cuts into the product or a watermark beside it
moves the box and lowers the similarity of two copies of one picture to that of two photos of similar products.
For pairs in that uncertain band, ORB keypoints (Rublee et al. 2011) of both images are matched, a similarity
transform (shift, scale, rotation: what crops, pads and resizes do) is fitted by RANSAC, and the first image is
warped onto the second: copies give many inliers and the same pixels after alignment; two photos of similar
products (one line in two colours, one studio set-up) give few inliers or different colours.
"""

from __future__ import annotations

import io
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import cv2
import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits

from eclip.data.images import channel_max

VERIFY_SIDE = 128  # keypoints are found on a copy with this longest side
KEYPOINTS = 150
GOOD_MATCH_BITS = 48  # Hamming distance (of 256 bits) under which two ORB descriptors may be the same point

cv2.setNumThreads(1)  # callers parallelize over pairs; OpenCV's own threads would only compete
# Three pyramid levels (x1.2 each): both images are brought to one size first, so only what a crop or a pad
# changes in scale remains; fewer levels are faster and confirm as many copies as eight.
_orb = cv2.ORB_create(nfeatures=KEYPOINTS, fastThreshold=10, edgeThreshold=15, patchSize=15, nlevels=3)


@dataclass
class Keypoints:
    pixels: np.ndarray  # (h, w, 3) uint8, longest side VERIFY_SIDE
    points: np.ndarray  # (K, 2) float32, x y in `pixels`
    bits: np.ndarray | None  # (K, 256) float32 0/1: the ORB descriptors' bits; None when no keypoint was found


def keypoints(image: Image.Image) -> Keypoints:
    small = image.copy()
    small.thumbnail((VERIFY_SIDE, VERIFY_SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(small.convert("RGB"))
    found, descriptors = _orb.detectAndCompute(cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY), None)
    bits = None if descriptors is None else np.unpackbits(descriptors, axis=1).astype(np.float32)
    return Keypoints(pixels, np.float32([k.pt for k in found]).reshape(-1, 2), bits)


def _mutual_matches(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i, j) of descriptors that are each other's nearest (Hamming) and within GOOD_MATCH_BITS:
    a brute-force matcher with cross-check. first (K1, 256), second (K2, 256): 0/1 bits as float32."""
    distance = first.sum(1)[:, None] + second.sum(1)[None, :] - 2 * (first @ second.T)  # (K1, K2), exact
    nearest, nearest_back = distance.argmin(1), distance.argmin(0)  # (K1,), (K2,)
    rows = np.arange(len(first))
    mutual = (nearest_back[nearest] == rows) & (distance[rows, nearest] <= GOOD_MATCH_BITS)
    return rows[mutual], nearest[mutual]


def same_picture(first: Keypoints, second: Keypoints, min_inliers: int = 30, max_difference: float = 16) -> bool:
    """True when `second` is `first` cropped, padded, resized, bordered or watermarked: at least `min_inliers`
    keypoint matches agree on one similarity transform, the transform maps at least 30% of `second` onto
    `first`, and there 3 of 4 aligned pixels differ by at most `max_difference` grey levels in every channel."""
    if first.bits is None or second.bits is None:
        return False
    query, train = _mutual_matches(first.bits, second.bits)
    if len(query) < min_inliers:  # cheap exit: most distinct pairs stop here, before RANSAC
        return False
    source, target = first.points[query], second.points[train]
    transform, inliers = cv2.estimateAffinePartial2D(source, target, method=cv2.RANSAC, ransacReprojThreshold=2.0,
                                                     maxIters=200)
    if transform is None or int(inliers.sum()) < min_inliers:
        return False
    height, width = second.pixels.shape[:2]
    warped = cv2.warpAffine(first.pixels, transform, (width, height), flags=cv2.INTER_LINEAR)
    covered = cv2.warpAffine(np.full(first.pixels.shape[:2], 255, np.uint8), transform, (width, height)) == 255
    if covered.sum() < 0.3 * height * width:
        return False
    difference = channel_max(np.abs(warped.astype(np.int16) - second.pixels.astype(np.int16)))[covered]  # (n,)
    return float(np.percentile(difference, 75)) <= max_difference


def confirm_pairs(images: dict[int, bytes], pairs: list[tuple[int, int]]) -> list[bool]:
    """`same_picture` for each (a, b) of `pairs`, the images given as encoded bytes by key; each image's
    keypoints are computed once."""
    found: dict[int, Keypoints] = {}

    def of(key: int) -> Keypoints:
        if key not in found:
            found[key] = keypoints(Image.open(io.BytesIO(images[key])).convert("RGB"))
        return found[key]

    return [same_picture(of(a), of(b)) for a, b in pairs]


def verify_pairs(first: np.ndarray, second: np.ndarray, read_images, workers: int, progress=None,
                 chunk: int | None = None) -> np.ndarray:
    """`same_picture` for pairs (first[k], second[k]) of image keys: (P,) bool. `read_images(keys)` returns
    {key: encoded bytes}. Pairs go to `workers` processes in chunks sorted by their first key, each chunk with
    the images it needs, so an image's keypoints are computed once per chunk it appears in; chunks are large
    (two per worker, 256 to 4,096 pairs) for that reason."""
    chunk = chunk or min(4096, max(256, -(-len(first) // (2 * workers))))
    order = np.argsort(first, kind="stable")
    pairs = np.stack([first[order], second[order]], axis=1)  # (P, 2)
    images = read_images(np.unique(pairs))
    chunks = [pairs[start:start + chunk].tolist() for start in range(0, len(pairs), chunk)]
    tasks = [({key: images[key] for pair in part for key in pair}, part) for part in chunks]
    confirmed = []
    # One BLAS thread per process: the matching products are tiny, and BLAS threads on top of the worker
    # processes only compete for the same cores (on the bench offers this stage of prepare took 38 s with
    # them instead of 14 s).
    parallel = workers > 1 and len(tasks) > 1
    with (ProcessPoolExecutor(workers, mp_context=get_context("forkserver"), initializer=threadpool_limits,
                              initargs=(1, "blas")) if parallel else threadpool_limits(1, "blas")) as runner:
        for result in (runner.map if parallel else map)(confirm_pairs, *zip(*tasks)):
            confirmed += result
            if progress:
                progress(len(result))
    out = np.zeros(len(pairs), dtype=bool)
    out[order] = confirmed
    return out
