"""ClickMe readers, TFRecord/Example codecs, release preprocessing and conversion.

Files "written by another tool" are written with the `tfrecord` package (its protobuf
Example serializer and its TFRecord framing); the release's preprocessing is re-derived
here in plain NumPy from the published procedure (TF half-pixel bilinear resize, the
release's kernel grid, SAME padding) and compared with harmonia's torch version.
"""

from __future__ import annotations

import gzip
import io
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from harmonia.data.clickme import (
    ClickMeDataset,
    ClickMeFormatError,
    ClickMeIndexedDataset,
    detect_file_format,
    list_shards,
)
from harmonia.data.clickme_preprocess import (
    ClickMePreprocess,
    gaussian_blur_same,
    release_gaussian_kernel,
    tf_resize_bilinear,
)
from harmonia.data.convert import convert
from harmonia.data.example import ExampleDecodeError, decode_example, encode_example
from harmonia.data.format import DatasetWriter, HarmoniaDataset
from harmonia.data.tfrecord import (
    TFRecordError,
    TFRecordWriter,
    count_records,
    iter_records,
    masked_crc32c,
    read_record_at,
    record_offsets,
)

# "Another tool": the `tfrecord` package (a test dependency) writes and reads the reference files.
from tfrecord.reader import tfrecord_iterator  # noqa: E402
from tfrecord.writer import TFRecordWriter as OtherWriter  # noqa: E402

# --------------------------------------------------------------------------- helpers


def _jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)))


def _smooth_image(rng, side=256):
    # smooth content so JPEG round trips stay close (noise would not)
    yy, xx = np.mgrid[0:side, 0:side] / side
    a, b, c = rng.random(3)
    img = np.stack([np.sin(6 * xx + a), np.cos(5 * yy + b), np.sin(4 * (xx + yy) + c)], -1)
    return ((img + 1) * 127.5).astype(np.uint8)


def _write_harmonization(path, n, seed=0, label0=0):
    """A harmonization shard written by the tfrecord package; returns the raw JPEG payloads."""
    rng = np.random.default_rng(seed)
    w = OtherWriter(str(path))
    payloads = []
    for i in range(n):
        img = _jpeg(_smooth_image(rng))
        hm = np.zeros((256, 256), np.uint8)
        hm[rng.integers(0, 256, 30), rng.integers(0, 256, 30)] = 255
        hm = _jpeg(hm)
        w.write({"image": (img, "byte"), "heatmap": (hm, "byte"), "label": (label0 + i, "int")})
        payloads.append((img, hm, label0 + i))
    w.close()
    return payloads


def _write_raw(path, n, side, scale=255.0, click_count=False, seed=0):
    rng = np.random.default_rng(seed)
    w = OtherWriter(str(path))
    arrays = []
    for i in range(n):
        img = (rng.random((side, side, 3)) * scale).astype(np.float32)
        hm = rng.random((side, side)).astype(np.float32)
        datum = {"image": (img.tobytes(), "byte"), "heatmap": (hm.tobytes(), "byte"), "label": (7 + i, "int")}
        if click_count:
            datum["click_count"] = (100 + i, "int")
        w.write(datum)
        arrays.append((img, hm))
    w.close()
    return arrays


# Independent NumPy versions of the release's operations --------------------------------


def np_tf_resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF2 tf.image.resize(bilinear, antialias=False) = resize_bilinear(half_pixel_centers=True),
    following TF's CPU kernel: in = (i + 0.5) * scale - 0.5 (float32), lower = max(floor, 0),
    upper = min(ceil, n - 1), lerp = in - floor; top + (bottom - top) * y_lerp."""
    img = img.astype(np.float32)
    in_h, in_w = img.shape[:2]

    def weights(out_n, in_n):
        scale = np.float32(in_n / out_n)
        lo, hi, lerp = [], [], []
        for i in range(out_n):
            x = (np.float32(i) + np.float32(0.5)) * scale - np.float32(0.5)
            f = np.floor(x)
            lo.append(max(int(f), 0))
            hi.append(min(int(np.ceil(x)), in_n - 1))
            lerp.append(np.float32(x - f))
        return np.array(lo), np.array(hi), np.array(lerp, np.float32)

    ylo, yhi, yl = weights(out_h, in_h)
    xlo, xhi, xl = weights(out_w, in_w)
    shape = (-1, 1) + (1,) * (img.ndim - 2)
    xl_b = xl.reshape((1, -1) + (1,) * (img.ndim - 2))
    top_l, top_r = img[ylo][:, xlo], img[ylo][:, xhi]
    bot_l, bot_r = img[yhi][:, xlo], img[yhi][:, xhi]
    top = top_l + (top_r - top_l) * xl_b
    bottom = bot_l + (bot_r - bot_l) * xl_b
    return top + (bottom - top) * yl.reshape(shape)


def np_release_kernel() -> np.ndarray:
    # The release: x = range(-(10-1)//2, (10-1)//2 + 1) = -5..4 (Python floor division),
    # y = range((10-1)//2, -(10-1)//2 - 1, -1) = 4..-5; xs, ys = meshgrid(x, y).
    x = np.arange(-5, 5, dtype=np.float64)
    y = np.arange(4, -6, -1, dtype=np.float64)
    k = np.empty((10, 10))
    for i in range(10):
        for j in range(10):
            k[i, j] = np.exp(-(x[j] ** 2 + y[i] ** 2) / (2 * 10.0**2)) / (2 * np.pi * 10.0**2)
    return (k / k.sum()).astype(np.float32)


def np_conv_same(m: np.ndarray, k: np.ndarray) -> np.ndarray:
    """tf.nn.conv2d(.., 'SAME'), stride 1: zero pad (k-1)//2 before, the rest after; cross-correlation."""
    kh, kw = k.shape
    pt, pl = (kh - 1) // 2, (kw - 1) // 2
    p = np.zeros((m.shape[0] + kh - 1, m.shape[1] + kw - 1), np.float64)
    p[pt : pt + m.shape[0], pl : pl + m.shape[1]] = m
    out = np.zeros(m.shape, np.float64)
    for a in range(kh):
        for b in range(kw):
            out += k[a, b] * p[a : a + m.shape[0], b : b + m.shape[1]]
    return out.astype(np.float32)


def np_release_heatmap(hm_u8: np.ndarray) -> np.ndarray:
    m = np_tf_resize_bilinear(hm_u8.astype(np.float32), 64, 64)
    m = np_conv_same(m, np_release_kernel())
    return np_tf_resize_bilinear(m, 224, 224)


# --------------------------------------------------------------------------- TFRecord layer


def test_masked_crc_matches_tfrecord_package():
    assert masked_crc32c(b"") == 0xA282EAD8
    for data in (b"a", b"hello world", bytes(range(256)) * 3):
        assert struct.pack("<I", masked_crc32c(data)) == OtherWriter.masked_crc(data)


def test_read_files_written_by_tfrecord_package(tmp_path):
    path = tmp_path / "other.tfrecords"
    payloads = _write_harmonization(path, 3)
    records = list(iter_records(path))
    assert [i for i, _ in records] == [0, 1, 2]
    for (_, data), (img, hm, label) in zip(records, payloads):
        ex = decode_example(data)
        assert ex["image"] == [img] and ex["heatmap"] == [hm] and ex["label"].tolist() == [label]
    assert count_records(path) == 3
    offsets = record_offsets(path)
    with open(path, "rb") as f:
        assert read_record_at(f, offsets[2], index=2) == records[2][1]
    assert [i for i, _ in iter_records(path, start=1, step=2)] == [1]


def test_our_files_read_by_tfrecord_package(tmp_path):
    path = tmp_path / "ours.tfrecords"
    rec = encode_example({"image": b"\xff\xd8xyz", "label": ("int64", [-4]), "w": np.array([0.25, 2.0], np.float32)})
    with TFRecordWriter(path) as w:
        w.write(rec)
        w.write(b"second")
    got = [bytes(r) for r in tfrecord_iterator(str(path))]
    assert got == [rec, b"second"]
    from tfrecord import example_pb2

    ex = example_pb2.Example()
    ex.ParseFromString(rec)
    feat = ex.features.feature
    assert feat["image"].bytes_list.value[0] == b"\xff\xd8xyz"
    assert list(feat["label"].int64_list.value) == [-4]
    assert list(feat["w"].float_list.value) == [0.25, 2.0]


def test_writer_is_atomic(tmp_path):
    path = tmp_path / "a.tfrecords"
    with pytest.raises(RuntimeError):
        with TFRecordWriter(path) as w:
            w.write(b"x")
            raise RuntimeError("boom")
    assert not path.exists() and not list(tmp_path.iterdir())


def _corrupt(path, offset, value=None, truncate=None):
    data = bytearray(path.read_bytes())
    if truncate is not None:
        data = data[:truncate]
    else:
        data[offset] ^= value or 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_records_are_named(tmp_path):
    path = tmp_path / "c.tfrecords"
    with TFRecordWriter(path) as w:
        for i in range(3):
            w.write(bytes([i]) * 100)
    rec = 8 + 4 + 100 + 4
    good = path.read_bytes()
    _corrupt(path, 2 * rec + 12 + 50)  # a data byte of record 2
    with pytest.raises(TFRecordError, match=r"c\.tfrecords: record 2: data CRC mismatch"):
        list(iter_records(path))
    assert len(list(iter_records(path, verify_crc=False))) == 3
    path.write_bytes(good)
    _corrupt(path, rec + 1)  # the length of record 1
    with pytest.raises(TFRecordError, match="record 1: length CRC mismatch"):
        list(iter_records(path))
    path.write_bytes(good)
    _corrupt(path, 0, truncate=len(good) - 10)
    with pytest.raises(TFRecordError, match="record 2: truncated file"):
        count_records(path)
    with pytest.raises(TFRecordError, match="record 2: truncated"):
        list(iter_records(path))
    path.write_bytes(gzip.compress(good))
    with pytest.raises(TFRecordError, match="gzip"):
        list(iter_records(path))


# --------------------------------------------------------------------------- Example codec


def test_example_codec_round_trip_and_protobuf_compat():
    from tfrecord import example_pb2

    feats = {"b": [b"", b"\x00\x01"], "i": ("int64", [0, 1, -1, 2**63 - 1, -(2**63)]), "f": [1.5, -0.0, 3e38]}
    data = encode_example(feats)
    back = decode_example(data)
    assert back["b"] == [b"", b"\x00\x01"]
    assert back["i"].tolist() == [0, 1, -1, 2**63 - 1, -(2**63)]
    assert back["f"].dtype == np.float32 and back["f"].tolist() == pytest.approx([1.5, 0.0, 3e38])
    ref = example_pb2.Example()
    ref.ParseFromString(data)
    assert list(ref.features.feature["i"].int64_list.value) == feats["i"][1]
    # Bytes produced by protobuf itself (any field order) decode to the same values.
    assert {k: (v if isinstance(v, list) else v.tolist()) for k, v in decode_example(ref.SerializeToString()).items()} == {
        k: (v if isinstance(v, list) else v.tolist()) for k, v in back.items()
    }


def test_example_unpacked_encoding_and_errors():
    # Example{features{feature{key:"n" value{int64_list{value:5 value:6}}}}} with *unpacked* ints
    ints = bytes([0x08, 5, 0x08, 6])
    feature = bytes([0x1A, len(ints)]) + ints
    entry = bytes([0x0A, 1]) + b"n" + bytes([0x12, len(feature)]) + feature
    features = bytes([0x0A, len(entry)]) + entry
    data = bytes([0x0A, len(features)]) + features
    assert decode_example(data)["n"].tolist() == [5, 6]
    with pytest.raises(ExampleDecodeError):
        decode_example(data[:-2])
    with pytest.raises(ExampleDecodeError):
        decode_example(b"\x0f\x00")  # wire type 7


# --------------------------------------------------------------------------- preprocessing


def test_resize_matches_tf_documented_example():
    # From the tf.image.resize documentation: a 5x5 identity resized to [3, 5].
    out = tf_resize_bilinear(torch.eye(5), (3, 5))
    expected = torch.tensor(
        [[0.6666667, 0.3333333, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 0.3333335, 0.6666665]]
    )
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("shape,size", [((256, 256), 224), ((256, 256), 64), ((64, 64), 224), ((7, 13), 5)])
def test_resize_matches_tf_algorithm(shape, size):
    x = np.random.default_rng(1).random(shape).astype(np.float32) * 255
    ours = tf_resize_bilinear(torch.from_numpy(x), size).numpy()
    # float32 rounding only (weights computed in a different order): 1e-3 on a 0..255 scale
    np.testing.assert_allclose(ours, np_tf_resize_bilinear(x, size, size), rtol=0, atol=1e-3)


def test_release_kernel_and_shifted_blur():
    k = release_gaussian_kernel()
    np.testing.assert_allclose(k.numpy(), np_release_kernel(), rtol=1e-6)
    assert divmod(int(k.argmax()), 10) == (4, 5)  # not centred: the release's integer grid
    # A delta at (p, q) blurred with SAME padding (4 before / 5 after): out[i, j] = k[p-i+4, q-j+4],
    # so the peak lands one column LEFT of the click.
    m = torch.zeros(64, 64)
    m[30, 40] = 1.0
    out = gaussian_blur_same(m, k)
    assert divmod(int(out.argmax()), 64) == (30, 39)
    assert float(out[25, 36]) == pytest.approx(float(k[30 - 25 + 4, 40 - 36 + 4]))
    assert float(out[30, 30]) == 0.0  # q - j + 4 = 14 > 9: outside the kernel


def test_release_heatmap_pipeline_hand_checked():
    hm = np.zeros((256, 256), np.uint8)
    hm[100:104, 180:184] = 255  # a click blob; at 64x64 it covers pixels 25 and 45 halfway
    hm[10, 10] = 128
    ours = ClickMePreprocess().heatmap(torch.from_numpy(hm).float()).numpy()
    ref = np_release_heatmap(hm)
    assert ours.shape == (224, 224)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    # Hand check at 64 x 64: pixel (25, 45) samples 256-pixels 101/102 x 181/182 -> 255 exactly.
    small = tf_resize_bilinear(torch.from_numpy(hm).float(), 64)
    assert float(small[25, 45]) == 255.0 and float(small[24, 45]) == 0.0


def test_preprocess_options():
    pre = ClickMePreprocess(image_size=128, blur_resolution=32, blur_kernel_size=5, blur_sigma=2.0)
    img, m = pre(torch.rand(3, 256, 256), torch.rand(256, 256))
    assert img.shape == (3, 128, 128) and m.shape == (128, 128)
    none = ClickMePreprocess.none()
    x = torch.rand(256, 256)
    assert torch.equal(none.heatmap(x), x)
    batch = ClickMePreprocess().heatmap(torch.rand(2, 256, 256))
    assert batch.shape == (2, 224, 224)
    with pytest.raises(ValueError):
        ClickMePreprocess(image_size=0)


# --------------------------------------------------------------------------- readers


def test_harmonization_shard_loads_like_the_release(tmp_path):
    path = tmp_path / "val-17.tfrecords"
    payloads = _write_harmonization(path, 3)
    assert detect_file_format(path) == "harmonization"
    items = list(ClickMeDataset(path))
    assert [it["id"] for it in items] == ["val-17-0", "val-17-1", "val-17-2"]
    for it, (img, hm, label) in zip(items, payloads):
        assert it["label"] == label and "click_count" not in it
        assert it["image"].dtype == torch.float32 and it["image"].shape == (3, 224, 224)
        ref_img = np_tf_resize_bilinear(_decode(img).astype(np.float32), 224, 224) / 255.0
        np.testing.assert_allclose(it["image"].permute(1, 2, 0).numpy(), ref_img, atol=2e-6)
        np.testing.assert_allclose(it["map"].numpy(), np_release_heatmap(_decode(hm)), rtol=1e-5, atol=1e-4)
    raw = list(ClickMeDataset(path, preprocess="none"))
    img, hm, _ = payloads[0]
    assert torch.equal(raw[0]["image"], torch.from_numpy(_decode(img)).permute(2, 0, 1).float() / 255)
    assert torch.equal(raw[0]["map"], torch.from_numpy(_decode(hm)).float())


def test_clickme1_and_adversarial_records(tmp_path):
    arrays = _write_raw(tmp_path / "clickme1.tfrecords", 2, 256, scale=255.0, click_count=True)
    adv = _write_raw(tmp_path / "adv.tfrecords", 2, 224, scale=1.0, seed=3)
    assert detect_file_format(tmp_path / "clickme1.tfrecords") == "clickme1"
    assert detect_file_format(tmp_path / "adv.tfrecords") == "adversarial"
    c1 = list(ClickMeDataset(tmp_path / "clickme1.tfrecords", preprocess="none"))
    assert c1[1]["click_count"] == 101 and c1[1]["label"] == 8
    np.testing.assert_allclose(c1[0]["image"].permute(1, 2, 0).numpy(), arrays[0][0] / 255.0, rtol=1e-6)
    assert torch.equal(c1[0]["map"], torch.from_numpy(arrays[0][1]))
    rel = list(ClickMeDataset(tmp_path / "clickme1.tfrecords"))[0]
    assert rel["image"].shape == (3, 224, 224)
    np.testing.assert_allclose(rel["map"].numpy(), np_release_heatmap(arrays[0][1]), rtol=1e-5, atol=1e-5)
    a = list(ClickMeDataset(tmp_path / "adv.tfrecords"))  # release: as stored, no blur
    assert torch.equal(a[0]["image"], torch.from_numpy(adv[0][0]).permute(2, 0, 1))
    assert torch.equal(a[0]["map"], torch.from_numpy(adv[0][1]))
    # forcing a format that does not match the records is an error naming the record
    with pytest.raises(ClickMeFormatError, match=r"adv\.tfrecords: record 0: raw image is .* expected 786432"):
        list(ClickMeDataset(tmp_path / "adv.tfrecords", format="clickme1"))


def test_dataloader_workers_and_ranks(tmp_path, monkeypatch):
    for s in range(3):
        _write_harmonization(tmp_path / f"train-{s}.tfrecords", 4, seed=s, label0=10 * s)
    ds = ClickMeDataset(tmp_path, preprocess=ClickMePreprocess(image_size=32, blur_resolution=16))
    expected = {f"train-{s}-{i}" for s in range(3) for i in range(4)}
    assert len(ds) == 12
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=workers)
        ids = [i for b in loader for i in b["id"]]
        assert len(ids) == 12 and set(ids) == expected
    single = ClickMeDataset(tmp_path / "train-1.tfrecords", preprocess="none")  # 1 file, 2 workers: records strided
    ids = [i for b in torch.utils.data.DataLoader(single, batch_size=3, num_workers=2) for i in b["id"]]
    assert sorted(ids) == sorted(f"train-1-{i}" for i in range(4))
    import harmonia.data.clickme as cm

    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(cm, "_rank_world", lambda rank=rank: (rank, 2))
        part = [it["id"] for it in ds]
        assert len(part) == len(ds)
        seen += part
    assert sorted(seen) == sorted(expected)


def test_indexed_dataset_matches_stream(tmp_path):
    _write_harmonization(tmp_path / "val-0.tfrecords", 2)
    _write_harmonization(tmp_path / "val-1.tfrecords", 3, seed=5)
    stream = list(ClickMeDataset(tmp_path))
    ix = ClickMeIndexedDataset(tmp_path)
    assert len(ix) == 5 and ix.ids == [it["id"] for it in stream]
    assert torch.equal(ix[3]["map"], stream[3]["map"]) and torch.equal(ix[-1]["image"], stream[-1]["image"])
    assert [p.name for p in ix.files()] == ["val-0.tfrecords", "val-1.tfrecords"]
    with pytest.raises(IndexError):
        ix[5]


def test_corrupt_shards_raise_named_errors(tmp_path):
    path = tmp_path / "val-3.tfrecords"
    _write_harmonization(path, 3)
    good = path.read_bytes()
    offsets = record_offsets(path)
    _corrupt(path, offsets[2] + 40)  # inside record 2's data
    with pytest.raises(ClickMeFormatError, match=r"val-3\.tfrecords: record 2: data CRC"):
        list(ClickMeDataset(path))
    path.write_bytes(good[: offsets[1] + 30])
    with pytest.raises(ClickMeFormatError, match=r"val-3\.tfrecords: record 1: truncated"):
        list(ClickMeDataset(path))
    with pytest.raises(ClickMeFormatError, match="record 1: truncated"):
        len(ClickMeDataset(path))
    # a record whose image looks like JPEG but is not decodable (CRCs are valid)
    bad = tmp_path / "bad.tfrecords"
    w = OtherWriter(str(bad))
    ok = _write_harmonization(tmp_path / "tmp.tfrecords", 1)[0]
    w.write({"image": (ok[0], "byte"), "heatmap": (ok[1], "byte"), "label": (1, "int")})
    w.write({"image": (ok[0][:200], "byte"), "heatmap": (ok[1], "byte"), "label": (1, "int")})
    w.close()
    with pytest.raises(ClickMeFormatError, match=r"bad\.tfrecords: record 1: cannot decode image"):
        list(ClickMeDataset(bad))
    other = tmp_path / "other.tfrecords"
    w = OtherWriter(str(other))
    w.write({"image": (b"\x00" * 1000, "byte"), "heatmap": (b"", "byte"), "label": (1, "int")})
    w.close()
    with pytest.raises(ClickMeFormatError, match="record 0: 'image' is 1000 bytes"):
        list(ClickMeDataset(other))


def test_list_shards(tmp_path):
    for i in (10, 2, 1):
        (tmp_path / f"val-{i}.tfrecords").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_shards(tmp_path)] == ["val-1.tfrecords", "val-2.tfrecords", "val-10.tfrecords"]
    assert len(list_shards(str(tmp_path / "val-1*.tfrecords"))) == 2
    with pytest.raises(FileNotFoundError, match="no such file"):
        list_shards(tmp_path / "missing")
    (tmp_path / "a").mkdir()
    _write_harmonization(tmp_path / "a" / "val-1.tfrecords", 1)
    _write_harmonization(tmp_path / "val-1.tfrecords", 1)
    with pytest.raises(ValueError, match="ids would collide"):
        ClickMeDataset([tmp_path / "a", tmp_path / "val-1.tfrecords"])


# --------------------------------------------------------------------------- convert + CLI


def test_convert_clickme_to_harmonia_and_back(tmp_path):
    src = tmp_path / "val"
    src.mkdir()
    _write_harmonization(src / "val-0.tfrecords", 3)
    res = convert(src, tmp_path / "h", to="harmonia")
    assert res.count == 3 and not res.synthetic
    hd = HarmoniaDataset(tmp_path / "h")
    assert hd.split == "val" and not hd.info.synthetic and hd.info.extra["clickme_formats"] == ["harmonization"]
    stream = list(ClickMeDataset(src))
    for i, it in enumerate(stream):
        h = hd[i]
        assert h["id"] == it["id"] and h["label"] == it["label"]
        assert torch.equal(h["map"], it["map"])  # maps stored exactly
        assert (h["image"] - it["image"]).abs().max() <= 0.5 / 255 + 1e-6  # PNG rounding only
    shards = convert(tmp_path / "h", tmp_path / "s", to="harmonization", shard_size=2)
    assert [p.name for p in shards.files] == ["val-0.tfrecords", "val-1.tfrecords"]
    back = list(ClickMeDataset(tmp_path / "s", preprocess="none"))
    assert [b["label"] for b in back] == [it["label"] for it in stream]
    assert back[0]["image"].shape == (3, 256, 256)
    with pytest.raises(ValueError, match="blur the maps twice"):
        convert(src, tmp_path / "x", to="harmonization", preprocess="release")


def test_convert_keeps_synthetic_flag(tmp_path):
    rng = np.random.default_rng(0)
    with DatasetWriter(tmp_path / "sim", "test", name="sim", synthetic=True) as w:
        for i in range(2):
            w.add(f"im{i}", _smooth_image(rng, 64), rng.random((64, 64)).astype(np.float32), label=i)
    res = convert(tmp_path / "sim", tmp_path / "shards", to="harmonization")
    assert res.synthetic and res.count == 2
    items = list(ClickMeDataset(tmp_path / "shards", preprocess="none"))
    orig = HarmoniaDataset(tmp_path / "sim")[1]
    up = torch.nn.functional.interpolate(orig["image"][None], size=256, mode="bilinear", antialias=True)[0]
    assert (items[1]["image"] - up).abs().mean() < 0.02  # JPEG q95 of a smooth image
    back = convert(tmp_path / "shards", tmp_path / "again", to="harmonia", split="test")
    assert back.synthetic and HarmoniaDataset(tmp_path / "again").info.synthetic


def test_cli_convert(tmp_path):
    from typer.testing import CliRunner

    from harmonia.cli.main import app

    src = tmp_path / "val"
    src.mkdir()
    _write_harmonization(src / "val-0.tfrecords", 2)
    runner = CliRunner()
    r = runner.invoke(app, ["data", "convert", str(src), str(tmp_path / "out"), "--to", "harmonia"])
    assert r.exit_code == 0, r.output
    assert "Wrote 2 records" in r.output and len(HarmoniaDataset(tmp_path / "out")) == 2
    r = runner.invoke(app, ["data", "convert", str(tmp_path / "nope"), str(tmp_path / "o2")])
    assert r.exit_code == 2 and "error:" in r.output
    path = src / "val-0.tfrecords"
    path.write_bytes(path.read_bytes()[:-7])
    r = runner.invoke(app, ["data", "convert", str(src), str(tmp_path / "o3")])
    assert r.exit_code == 2 and "record 1" in r.output
    h = runner.invoke(app, ["data", "convert", "--help"])
    assert h.exit_code == 0 and "harmonia data convert clickme/val" in h.output


# --------------------------------------------------------------------------- fast paths


def test_torchvision_and_pil_jpeg_decoders_agree():
    """The reader decodes JPEGs with torchvision (faster); PIL must give the same pixels."""
    from harmonia.data.clickme import _decode_encoded

    import skimage.data as sd

    rng = np.random.default_rng(0)
    photo = sd.astronaut()
    cases = [(_jpeg(photo[:256, :256]), 3), (_jpeg(_smooth_image(rng), quality=75), 3),
             (_jpeg((rng.random((256, 256)) * 255).astype(np.uint8)), 1),  # heatmap
             (_jpeg((rng.random((64, 80)) * 255).astype(np.uint8)), 3)]  # grey JPEG read as RGB
    buf = io.BytesIO()
    Image.fromarray(photo[:100, :120]).save(buf, format="JPEG", quality=90, subsampling=0, progressive=True)
    cases.append((buf.getvalue(), 3))
    for data, channels in cases:
        with Image.open(io.BytesIO(data)) as im:
            ref = np.array(im.convert("RGB") if channels == 3 else im)
        ours = _decode_encoded(data, "x", "image", channels).numpy()
        np.testing.assert_array_equal(ours.reshape(ref.shape), ref)
    # errors still name the record, whichever decoder saw the bytes first
    with pytest.raises(ClickMeFormatError, match="rec 3: cannot decode image"):
        _decode_encoded(cases[0][0][:400], "rec 3", "image", 3)
    with pytest.raises(ClickMeFormatError, match="3 channels, expected 1"):
        _decode_encoded(cases[0][0], "rec 3", "heatmap", 1)


@pytest.mark.parametrize("preprocess", ["release", "none", ClickMePreprocess(image_size=128, blur_resolution=32)])
def test_uint8_output_with_batched_preprocessing_matches_per_item(tmp_path, preprocess):
    _write_harmonization(tmp_path / "val-0.tfrecords", 3)
    _write_harmonization(tmp_path / "val-1.tfrecords", 2, seed=1)
    ref = list(ClickMeDataset(tmp_path, preprocess=preprocess))
    for ds in (ClickMeDataset(tmp_path, preprocess=preprocess, output="uint8"),
               ClickMeIndexedDataset(tmp_path, preprocess=preprocess, output="uint8")):
        loader = torch.utils.data.DataLoader(ds, batch_size=4)
        batches = list(loader)
        assert batches[0]["image"].dtype == torch.uint8 and batches[0]["map"].dtype == torch.uint8
        assert batches[0]["image"].shape == (4, 3, 256, 256) and batches[0]["map"].shape == (4, 256, 256)
        done = [ds.finish_batch(b) for b in batches]
        images = torch.cat([b["image"] for b in done])
        maps = torch.cat([b["map"] for b in done])
        assert [i for b in done for i in b["id"]] == [it["id"] for it in ref]
        assert images.dtype == torch.float32 and maps.dtype == torch.float32
        torch.testing.assert_close(images, torch.stack([it["image"] for it in ref]), rtol=0, atol=1e-5)
        ref_maps = torch.stack([it["map"] for it in ref])
        torch.testing.assert_close(maps, ref_maps, rtol=1e-5, atol=1e-5 * float(ref_maps.abs().max()))
        # a separate cache key: batched numbers agree to ~1e-5, not bit for bit
        assert ds.config() != ClickMeDataset(tmp_path, preprocess=preprocess).config()
    float_ds = ClickMeDataset(tmp_path, preprocess=preprocess)
    assert float_ds.finish_batch(ref[0]) is ref[0]  # float32 output: nothing deferred


def test_uint8_output_rejects_raw_float_records_and_bad_values(tmp_path):
    _write_raw(tmp_path / "clickme1.tfrecords", 1, 256)
    with pytest.raises(ClickMeFormatError, match="raw float32"):
        list(ClickMeDataset(tmp_path / "clickme1.tfrecords", output="uint8"))
    with pytest.raises(ValueError, match="output"):
        ClickMeDataset(tmp_path, output="float16")
    with pytest.raises(ValueError, match="uint8"):
        ClickMePreprocess().from_uint8(torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8))
