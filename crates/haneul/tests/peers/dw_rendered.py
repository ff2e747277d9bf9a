"""WADO-RS rendered resources with dicomweb-client: image/jpeg and image/png
of instances and frames, decoded with Pillow; sizes follow the image and the
viewport (aspect kept); a window is applied as PS3.3 C.11.2.1.2 says (checked
pixel by pixel against pydicom's values) and changes the output; frames of a
multi-frame image render separately; thumbnails fit their size.

argv: SPEC_JSON {"url": DICOMweb root, "files": [test file names]}
prints {"images": n, "viewport": [w, h], "window_pixels": n, "frames": n}"""

import io
import sys

import numpy
import pydicom
from PIL import Image

sys.dont_write_bytecode = True  # importing dw_util must leave no __pycache__ in the tree
from dw_util import check, client, emit, spec, stow_broad_set

# Images of each kind: monochrome with rescale, colour, compressed, multi-frame.
RENDERED = ["CT_small.dcm", "MR_small_jp2klossless.dcm", "SC_rgb_rle.dcm", "examples_ybr_color.dcm",
            "SC_rgb_rle_2frame.dcm", "MR_small_bigendian.dcm", "examples_palette.dcm"]


def decode(data, media):
    magic = b"\xff\xd8" if media == "image/jpeg" else b"\x89PNG"
    check(data[:len(magic)] == magic, f"not a {media} stream: {data[:8]!r}")
    return Image.open(io.BytesIO(data))


def linear_window(values, center, width):
    """The VOI LUT linear function of PS3.3 C.11.2.1.2.1 to 0..255."""
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    out = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    out = numpy.where(values <= low, 0, numpy.where(values > high, 255, out))
    return out


def main():
    options = spec()
    dw = client(options["url"])
    names = [n for n in RENDERED if n in options["files"]]
    stored = stow_broad_set(dw, names)
    result = {"images": 0, "viewport": None, "window_pixels": 0, "frames": 0}

    for name, (ds, sent) in stored.items():
        original = pydicom.dcmread(io.BytesIO(sent))
        uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        size = (int(original.Columns), int(original.Rows))
        for media in ("image/jpeg", "image/png"):
            image = decode(dw.retrieve_instance_rendered(*uids, media_types=(media,)), media)
            check(image.size == size, f"{name} {media}: {image.size}, not {size}")
            result["images"] += 1
        # A viewport: scaled to fit, aspect ratio kept.
        viewport = (size[0] // 2 + 7, size[1] // 3 + 5)
        image = decode(dw.retrieve_instance_rendered(*uids, media_types=("image/png",),
                                                     params={"viewport": f"{viewport[0]},{viewport[1]}"}),
                       "image/png")
        scale = min(viewport[0] / size[0], viewport[1] / size[1])
        wanted = (size[0] * scale, size[1] * scale)
        check(all(abs(got - want) <= 1 for got, want in zip(image.size, wanted)),
              f"{name}: viewport {viewport} gave {image.size}, wanted about {wanted}")
        check(image.size[0] <= viewport[0] and image.size[1] <= viewport[1], f"{name}: larger than the viewport")
        result["viewport"] = list(image.size)
        # A thumbnail fits its default size.
        thumb = decode(dw._http_get(f"{options['url']}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}"
                                    "/thumbnail", headers={"Accept": "image/png"}).content, "image/png")
        check(max(thumb.size) <= 128, f"{name}: thumbnail of {thumb.size}")

        # Frames of a multi-frame image: each its own, the same size.
        frames = int(original.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            rendered = [numpy.asarray(decode(dw.retrieve_instance_frames_rendered(
                *uids, frame_numbers=[n], media_types=("image/png",)), "image/png")) for n in (1, 2)]
            first = numpy.asarray(decode(dw.retrieve_instance_rendered(*uids, media_types=("image/png",)),
                                         "image/png"))
            check(numpy.array_equal(rendered[0], first), f"{name}: frame 1 differs from the instance rendered")
            differ = not numpy.array_equal(original.pixel_array[0], original.pixel_array[1])
            check(numpy.array_equal(rendered[0], rendered[1]) != differ,
                  f"{name}: frames 1 and 2 render {'the same' if differ else 'differently'}")
            result["frames"] += 2

    # A window on a monochrome image with a modality rescale: PS3.3's linear
    # function of the rescaled values, pixel for pixel; another window differs.
    name = "CT_small.dcm"
    if name in stored:
        ds, sent = stored[name]
        original = pydicom.dcmread(io.BytesIO(sent))
        uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        values = original.pixel_array.astype(numpy.float64) * float(original.get("RescaleSlope", 1)) \
            + float(original.get("RescaleIntercept", 0))
        outputs = []
        for center, width in ((40.0, 400.0), (300.0, 1500.0)):
            png = dw.retrieve_instance_rendered(*uids, media_types=("image/png",),
                                                params={"window": f"{center:g},{width:g},linear"})
            image = numpy.asarray(decode(png, "image/png").convert("L")).astype(numpy.float64)
            wanted = linear_window(values, center, width)
            worst = float(numpy.abs(image - wanted).max())
            check(worst <= 1.0, f"{name}: window {center},{width} is off by up to {worst} levels")
            outputs.append(image)
            result["window_pixels"] += image.size
        check(not numpy.array_equal(outputs[0], outputs[1]), f"{name}: two windows render the same image")
    emit(result)


main()
