"""WADO-RS frames with dicomweb-client: the broad set is stored, then every
frame of every image is retrieved as application/octet-stream (Explicit VR
Little Endian) and compared with pydicom's decoding of the file sent; single
frames, frame lists in any order, a single-part answer, and frames of
compressed instances in their stored syntax (image/jpeg, image/jls, image/jp2)
compared with the fragments of the file.

argv: SPEC_JSON {"url": DICOMweb root, "files": [test file names]}
prints {"instances": n, "frames": n, "lossy_frames": n, "multi_frame_lists": n,
        "compressed_as_stored": n, "single_part": n}"""

import io
import sys

import numpy
import pydicom
from pydicom.encaps import generate_frames
from pydicom.pixels import pack_bits, pixel_array

sys.dont_write_bytecode = True  # importing dw_util must leave no __pycache__ in the tree
from dw_util import LOSSLESS, authorized_session, check, client, emit, spec, stow_broad_set

EXPLICIT_LE = "1.2.840.10008.1.2.1"
OCTETS = (("application/octet-stream", EXPLICIT_LE),)
# The media type of frames in a compressed syntax (PS3.18 Table 8.7.3-2).
FRAME_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
}
# Lossy decoders may round differently by a few levels.
LOSSY_TOLERANCE = 4


def little_endian(array):
    return numpy.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()


def expected_native(original, index, frames):
    """Frame `index` of a native instance as Explicit VR Little Endian octets."""
    info = original
    if info.BitsAllocated == 1:
        return pack_bits(pixel_array(original, index=index, raw=True))
    if str(info.PhotometricInterpretation).endswith(("_422", "_420")):
        # Subsampled native frames go out as stored (the broad set's is little endian).
        length = len(original.PixelData) // frames
        return original.PixelData[index * length:(index + 1) * length]
    array = pixel_array(original, index=index, raw=True)
    if int(info.SamplesPerPixel) > 1 and int(info.get("PlanarConfiguration", 0)) == 1:
        array = numpy.moveaxis(array, -1, 0)  # colour-by-plane, as stored
    return little_endian(array)


def main():
    options = spec()
    url = options["url"]
    dw = client(url)
    stored = stow_broad_set(dw, options["files"])
    result = {"instances": 0, "frames": 0, "lossy_frames": 0, "multi_frame_lists": 0,
              "compressed_as_stored": 0, "single_part": 0}
    for name, (ds, sent) in stored.items():
        original = pydicom.dcmread(io.BytesIO(sent))
        if "PixelData" not in original:
            continue
        syntax = str(original.file_meta.TransferSyntaxUID)
        frames = int(original.get("NumberOfFrames", 1) or 1)
        uids = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        resource = f"{url}/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}"
        if original.file_meta.TransferSyntaxUID.is_deflated:
            # Frames of deflated instances are not served: a clean 406, never a 500.
            answer = authorized_session().get(f"{resource}/frames/1", headers={"Accept": "application/octet-stream"})
            check(answer.status_code == 406, f"{name}: frames of a deflated instance: {answer.status_code}")
            continue

        # Every frame at once, in Explicit VR Little Endian.
        got = dw.retrieve_instance_frames(*uids, frame_numbers=list(range(1, frames + 1)), media_types=OCTETS)
        check(len(got) == frames, f"{name}: {len(got)} frames, not {frames}")
        for index, frame in enumerate(got):
            if not original.file_meta.TransferSyntaxUID.is_compressed:
                wanted = expected_native(original, index, frames)
                check(frame == wanted, f"{name} frame {index + 1}: {len(frame)} bytes differ from pydicom's "
                                       f"{len(wanted)} (first at {first_difference(frame, wanted)})")
            elif syntax in LOSSLESS:
                wanted = little_endian(pixel_array(original, index=index, raw=True))
                check(frame == wanted, f"{name} frame {index + 1}: decoded bytes differ from pydicom's "
                                       f"(first at {first_difference(frame, wanted)})")
            else:
                reference = pixel_array(original, index=index)  # lossy JPEG: converted to RGB, as served
                check(len(frame) == reference.nbytes, f"{name} frame {index + 1}: {len(frame)} bytes, "
                                                      f"not {reference.nbytes}")
                mine = numpy.frombuffer(frame, dtype=reference.dtype.newbyteorder("<")).reshape(reference.shape)
                worst = int(numpy.abs(mine.astype(numpy.int64) - reference.astype(numpy.int64)).max())
                check(worst <= LOSSY_TOLERANCE, f"{name} frame {index + 1}: differs from pydicom by up to {worst}")
                result["lossy_frames"] += 1
            result["frames"] += 1

        # One frame, and a list out of order.
        single = dw.retrieve_instance_frames(*uids, frame_numbers=[frames], media_types=OCTETS)
        check(single == [got[-1]], f"{name}: frame {frames} alone differs from the same frame in the list")
        if frames > 1:
            picked = [frames, 1, 2] if frames > 2 else [2, 1]
            listed = dw.retrieve_instance_frames(*uids, frame_numbers=picked, media_types=OCTETS)
            check(listed == [got[n - 1] for n in picked], f"{name}: frames {picked} in the wrong order or wrong")
            result["multi_frame_lists"] += 1

        # dicomweb-client's default (type="*/*"): native frames decoded, compressed ones as stored.
        default = dw.retrieve_instance_frames(*uids, frame_numbers=[1])
        if original.file_meta.TransferSyntaxUID.is_compressed:
            wanted = next(generate_frames(original.PixelData, number_of_frames=frames))
            check(default == [wanted], f"{name}: default frame 1 is not the stored fragments")
        else:
            check(default == got[:1], f"{name}: default frame 1 differs from the octet-stream one")

        # A single-part answer when asked for application/octet-stream alone.
        answer = authorized_session().get(f"{resource}/frames/1", headers={"Accept": "application/octet-stream"})
        check(answer.status_code == 200 and answer.content == got[0],
              f"{name}: single-part frame 1: {answer.status_code}, {len(answer.content)} bytes")
        check(answer.headers.get("Content-Type", "").startswith("application/octet-stream"),
              f"{name}: single-part Content-Type {answer.headers.get('Content-Type')!r}")
        result["single_part"] += 1

        # Compressed frames as stored, in their own media type and with transfer-syntax=*.
        if syntax in FRAME_MEDIA:
            fragments = list(generate_frames(original.PixelData, number_of_frames=frames))
            media = FRAME_MEDIA[syntax]
            as_stored = dw.retrieve_instance_frames(*uids, frame_numbers=list(range(1, frames + 1)),
                                                    media_types=((media, syntax),))
            check(as_stored == fragments, f"{name}: {media} frames are not the stored fragments")
            star = dw.retrieve_instance_frames(*uids, frame_numbers=[1],
                                               media_types=(("application/octet-stream", "*"),))
            check(star == fragments[:1], f"{name}: transfer-syntax=* frame 1 is not the stored fragment")
            result["compressed_as_stored"] += 1
        result["instances"] += 1
    emit(result)


def first_difference(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


main()
