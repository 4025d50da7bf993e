"""Photos from bytes or files to 8-bit BGR arrays: formats sniffed from their first bytes, sizes checked
before decoding, EXIF rotation, 16-bit, alpha and CMYK handled; ImageError with one line for the user otherwise."""

from __future__ import annotations

import os
import stat
import struct

import cv2
import numpy as np


class ImageError(ValueError):
    """The data is not a usable image (empty, not an image, truncated, unsupported pixel format)."""


_MAGIC = [
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
]

FORMATS = ("JPEG", "PNG", "WebP", "BMP", "TIFF", "GIF")  # what decode_image reads, each size-checked from its header


def _sniff(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)


def image_kind(head: bytes) -> str | None:
    """The photo format (one of FORMATS) that a file's first bytes announce, or None when they announce none."""
    return _sniff(head)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:  # stray bytes before a marker: skipped, as libjpeg does
            i = data.find(b"\xff", i)
            if i < 0:
                return None
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in (0x01, *range(0xD0, 0xD9)):  # markers without a length
            i += 2
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        elif marker == 0xDA:  # start of scan before any frame header
            return None
        else:
            i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: key frame start code, then 14-bit sizes
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:  # lossless: 14 bits width - 1, 14 bits height - 1
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:  # extended (alpha, animation): 24-bit canvas width - 1, height - 1
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth and ImageLength of the first page (the one decoded)."""
    end = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(end + "I", data, 4)
    (count,) = struct.unpack_from(end + "H", data, ifd)
    size: dict[int, int] = {}
    for i in range(count):
        tag, kind = struct.unpack_from(end + "HH", data, ifd + 2 + 12 * i)
        if tag in (256, 257):  # SHORT or LONG
            size[tag] = struct.unpack_from(end + ("H" if kind == 3 else "I"), data, ifd + 10 + 12 * i)[0]
    return (size[256], size[257]) if len(size) == 2 else None


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    (header,) = struct.unpack_from("<I", data, 14)
    if header not in (12, 16, 40, 52, 56, 64, 108, 124):  # not a known info header: not a bitmap after all
        return None
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack_from("<HH", data, 18)
    width, height = struct.unpack_from("<ii", data, 18)  # negative height: rows stored top-down
    return abs(width), abs(height)


_SIZE_READERS = {
    "JPEG": _jpeg_size,
    "PNG": lambda data: struct.unpack_from(">II", data, 16),  # IHDR
    "GIF": lambda data: struct.unpack_from("<HH", data, 6),  # logical screen
    "BMP": _bmp_size,
    "TIFF": _tiff_size,
    "WebP": _webp_size,
}


def _tiff_tags(data: bytes, wanted: tuple[int, ...]) -> dict[int, int]:
    """The first value of each wanted tag of a TIFF's first page (SHORT or LONG; an array's first element)."""
    end = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(end + "I", data, 4)
    (count,) = struct.unpack_from(end + "H", data, ifd)
    found: dict[int, int] = {}
    for i in range(count):
        tag, kind, n = struct.unpack_from(end + "HHI", data, ifd + 2 + 12 * i)
        if tag in wanted and kind in (3, 4):
            fmt, size = ("H", 2) if kind == 3 else ("I", 4)
            where = ifd + 10 + 12 * i
            if n * size > 4:  # the values live elsewhere: their offset is here
                (where,) = struct.unpack_from(end + "I", data, where)
            found[tag] = struct.unpack_from(end + fmt, data, where)[0]
    return found


def _decoded_pixel_bytes(data: bytes, kind: str) -> int:
    """Bytes per pixel of the array OpenCV decodes this file into (channels x bytes per sample), from its header;
    an upper bound where the header does not settle it (a palette that may carry transparency: 4)."""
    if kind == "JPEG":
        return 3  # read as BGR
    if kind == "PNG":
        depth, color_type = data[24], data[25]
        channels = {0: 1, 2: 3, 3: 4, 4: 4, 6: 4}.get(color_type, 4)
        return channels * (2 if depth == 16 else 1)
    if kind == "BMP":
        (header,) = struct.unpack_from("<I", data, 14)
        bits = struct.unpack_from("<H", data, 24 if header == 12 else 28)[0]
        return 4 if bits == 32 else 3
    if kind == "TIFF":
        tags = _tiff_tags(data, (258, 277))  # BitsPerSample, SamplesPerPixel
        samples, bits = max(1, tags.get(277, 1)), max(1, tags.get(258, 8))
        return min(samples, 4) * max(1, (bits + 7) // 8)
    return 4  # GIF, WebP: BGR or BGRA


def _declared_size(data: bytes, kind: str | None) -> tuple[int, int] | None:
    """(width, height) as the file's header declares it, read without decoding; None when unknown."""
    if kind not in _SIZE_READERS:
        return None
    try:
        return _SIZE_READERS[kind](data)
    except struct.error:  # the header is cut short
        return None


def _exif_orientation(blob: bytes) -> int:
    """The Orientation tag (1..8) of an EXIF block (a TIFF header, maybe after 'Exif\\0\\0'); 1 if absent."""
    if blob.startswith(b"Exif\x00\x00"):
        blob = blob[6:]
    if len(blob) < 8 or blob[:2] not in (b"II", b"MM"):
        return 1
    end = "<" if blob[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(end + "I", blob, 4)
        (count,) = struct.unpack_from(end + "H", blob, ifd)
        for i in range(count):
            tag, kind, _, value = struct.unpack_from(end + "HHIH", blob, ifd + 2 + 12 * i)
            if tag == 0x0112 and kind == 3:
                return value if 1 <= value <= 8 else 1
    except struct.error:
        pass
    return 1


def _apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Undo an EXIF orientation the way OpenCV's own decoder does for JPEG."""
    if orientation in (5, 6, 7, 8):
        img = cv2.transpose(img)
    flip = {2: 1, 3: -1, 4: 0, 6: 1, 7: -1, 8: 0}.get(orientation)
    return img if flip is None else cv2.flip(img, flip)


COMPOSITE_PIXELS = 1 << 18  # alpha is composited this many pixels at a time: 16 bytes each of float temporaries


def to_bgr8(img: np.ndarray) -> np.ndarray:
    """Decoded array (gray, gray+alpha, BGRA; 8/16-bit or float) -> uint8 BGR, alpha composited on white. Memory:
    the result and a few rows of temporaries, never a float copy of the whole photo (a 16-bit RGBA photo at the
    size cap would need several GB that way); a float input is clipped in place."""
    if img.dtype == np.uint16:
        img = cv2.convertScaleAbs(img, alpha=1 / 257.0)  # straight to uint8, rounded
    elif img.dtype in (np.float32, np.float64):
        np.nan_to_num(img, copy=False)
        np.clip(img, 0.0, 1.0, out=img)
        img = cv2.convertScaleAbs(img, alpha=255.0)
    elif img.dtype != np.uint8:
        raise ImageError(f"unsupported pixel format ({img.dtype})")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    channels = img.shape[2]
    if channels in (2, 4):
        out = np.empty((*img.shape[:2], 3), np.uint8)
        step = max(1, COMPOSITE_PIXELS // max(1, img.shape[1]))
        for top in range(0, img.shape[0], step):
            rows = img[top : top + step]
            alpha = rows[..., -1:].astype(np.float32)
            alpha *= 1 / 255.0
            color = rows[..., :-1].astype(np.float32)
            if channels == 2:
                color = np.repeat(color, 3, axis=2)
            color -= 255.0  # color * alpha + 255 * (1 - alpha), in place
            color *= alpha
            color += 255.0
            out[top : top + step] = np.rint(color, out=color)
        return out
    if channels == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if channels == 3:
        return img
    raise ImageError(f"unsupported image with {channels} channels")


MAX_PIXELS = 120_000_000  # larger images are refused (a 120-megapixel BGR image is 360 MB in memory)
# ... and so are images whose decoded pixels (width x height x channels x bytes per sample, as the header declares
# them) would take more than this: an 8-bit RGBA photo at the pixel cap, a 16-bit RGBA one of up to 60 megapixels.
MAX_DECODED_BYTES = 480_000_000
MAX_FILE_BYTES = 256_000_000  # larger photo files are not read (the largest camera JPEGs are tens of MB)


def read_photo_file(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """A photo file's bytes. Only a regular file is read (a pipe named .jpg would wait forever, a link to /dev/zero
    would fill the memory), and only up to `max_bytes`: ImageError otherwise, or when it cannot be read."""
    name = os.fspath(path)
    try:
        info = os.stat(name)  # follows links: what would be read
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"{name!r} is not a regular file (a pipe, device or socket): not read")
        if info.st_size > max_bytes:
            raise ImageError(
                f"file too large: {info.st_size / 1e6:,.0f} MB (photos of at most {max_bytes / 1e6:,.0f} MB)"
            )
        with open(name, "rb") as handle:  # read(n) sets n bytes aside first: the file's size, not the limit
            data = handle.read(min(info.st_size, max_bytes) + 1)
    except OSError as e:
        raise ImageError(f"cannot read {name!r}: {e.strerror or e}") from None
    if len(data) > max_bytes:  # it grew past the limit while being read
        raise ImageError(f"file too large: more than {max_bytes / 1e6:,.0f} MB")
    return data


def check_photo(data: bytes, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_DECODED_BYTES) -> str:
    """The photo format of a file's bytes, checked without decoding it (cheap, before any pixel is made): ImageError
    for empty, non-image and truncated data and for a header that declares more than `max_pixels` pixels, or
    pixels that would take more than `max_bytes` once decoded."""
    if not data:
        raise ImageError("empty file (0 bytes): not an image")
    kind = _sniff(data)
    if kind is None:  # other formats OpenCV reads (PPM, HDR, JPEG 2000, ...) are refused: no size check for them
        raise ImageError(f"not an image (unrecognised file format; {', '.join(FORMATS)} files are read)")
    declared = _declared_size(data, kind)
    if declared is None:
        raise ImageError(f"truncated or corrupt {kind} file ({len(data):,} bytes): no image size in its header")
    if declared[0] * declared[1] > max_pixels:
        raise ImageError(f"image too large: {declared[0]}x{declared[1]} pixels (at most {max_pixels:,})")
    try:
        decoded = declared[0] * declared[1] * _decoded_pixel_bytes(data, kind)
    except (struct.error, IndexError):
        raise ImageError(f"truncated or corrupt {kind} file ({len(data):,} bytes): its header is cut short") from None
    if decoded > max_bytes:
        raise ImageError(
            f"image too large to decode: {declared[0]}x{declared[1]} pixels would take {decoded / 1e6:,.0f} MB "
            f"in memory (at most {max_bytes / 1e6:,.0f} MB; a 16-bit or transparent photo counts double or more)"
        )
    return kind


def decode_image(data: bytes | str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """uint8 BGR HxWx3 with EXIF orientation applied; grayscale, RGBA (composited on white), palette, CMYK and
    16-bit inputs converted; the first frame of an animated or multi-page file. ``data`` is the file's bytes, a
    path, or a file-like object (e.g. an upload) in one of FORMATS. Raises ImageError for empty / non-image /
    truncated data, an image whose header declares more than ``max_pixels`` pixels (checked before decoding:
    no decompression bombs), and a path that cannot be read."""
    if hasattr(data, "getvalue"):
        data = data.getvalue()
    elif hasattr(data, "read"):
        data = data.read()
    if isinstance(data, str | os.PathLike):
        data = read_photo_file(data)
    data = bytes(data)
    kind = check_photo(data, max_pixels)
    buf = np.frombuffer(data, np.uint8)
    try:
        if kind == "JPEG":
            # JPEG has no alpha; IMREAD_COLOR applies the EXIF orientation itself.
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
            orientation = 1
        else:
            img, types, meta = cv2.imdecodeWithMetadata(buf, flags=cv2.IMREAD_UNCHANGED)
            orientation = 1
            for t, m in zip(types, meta, strict=False):
                if t == cv2.IMAGE_METADATA_EXIF:
                    orientation = _exif_orientation(np.asarray(m, np.uint8).tobytes())
    except cv2.error as e:
        if "too large" in str(e).lower() or "pixels" in str(e).lower():
            raise ImageError("image too large to decode") from None
        raise ImageError(f"truncated or corrupt {kind} file ({len(data):,} bytes)") from None
    if img is None or img.size == 0:
        raise ImageError(f"truncated or corrupt {kind} file ({len(data):,} bytes)")
    if img.shape[0] * img.shape[1] > max_pixels:
        raise ImageError(f"image too large: {img.shape[1]}x{img.shape[0]} pixels (at most {max_pixels:,})")
    img = to_bgr8(img)
    if orientation != 1:
        img = np.ascontiguousarray(_apply_orientation(img, orientation))
    return img
