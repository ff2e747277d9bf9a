"""WADO-RS retrieve with dicomweb-client: the broad set is stored, then every
study, series and instance is retrieved with transfer-syntax=* and each part's
SHA-256 is compared with the bytes sent; compressed instances asked for in
Explicit VR Little Endian decode to the same pixels as pydicom's decoding of
the original, and native ones come back transcoded with the same values.

argv: SPEC_JSON {"url": DICOMweb root, "files": [test file names]}
prints {"instances": n, "study_parts": n, "series_parts": n,
        "decompressed": n, "transcoded": n}"""

import hashlib
import io
import sys

import numpy
import pydicom

sys.dont_write_bytecode = True  # importing dw_util must leave no __pycache__ in the tree
from dw_util import LOSSLESS, check, client, emit, spec, stow_broad_set

AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def sha(data):
    return hashlib.sha256(bytes(data)).hexdigest()


def parts(dw, url, accept=AS_STORED):
    """The raw parts of a multipart retrieve, split by dicomweb-client."""
    response = dw._http_get(url, headers={"Accept": accept})
    check(response.status_code == 200, f"GET {url}: {response.status_code}")
    content_type = response.headers.get("Content-Type", "")
    check(content_type.startswith("multipart/related"), f"GET {url}: Content-Type {content_type!r}")
    return list(dw._decode_multipart_message(response, stream=False))


def main():
    options = spec()
    url = options["url"]
    dw = client(url)
    stored = stow_broad_set(dw, options["files"])
    wanted = {sha(sent): name for name, (_, sent) in stored.items()}
    check(len(wanted) == len(stored), "two files of the broad set have the same bytes")
    result = {"instances": 0, "study_parts": 0, "series_parts": 0, "decompressed": 0, "transcoded": 0}

    # Study and series level: every part is one of the files sent, each exactly once.
    studies, series = {}, {}
    for name, (ds, _) in stored.items():
        studies.setdefault(str(ds.StudyInstanceUID), set()).add(name)
        series.setdefault((str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)), set()).add(name)
    for study, names in studies.items():
        got = [wanted.get(sha(part)) for part in parts(dw, f"{url}/studies/{study}")]
        check(None not in got, f"study {study}: a part is not byte-identical to any file sent")
        check(sorted(got) == sorted(names), f"study {study}: parts {sorted(got)}, wanted {sorted(names)}")
        result["study_parts"] += len(got)
        # The public API parses the same parts.
        datasets = dw.retrieve_study(study, media_types=(("application/dicom", "*"),))
        check(sorted(str(d.SOPInstanceUID) for d in datasets)
              == sorted(str(stored[n][0].SOPInstanceUID) for n in names), f"retrieve_study {study}")
    for (study, uid), names in series.items():
        got = [wanted.get(sha(part)) for part in parts(dw, f"{url}/studies/{study}/series/{uid}")]
        check(sorted(got) == sorted(names), f"series {uid}: parts {sorted(map(str, got))}, wanted {sorted(names)}")
        result["series_parts"] += len(got)

    # Instance level, as multipart and as a single application/dicom body.
    for name, (ds, sent) in stored.items():
        resource = f"{url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        got = parts(dw, resource)
        check(len(got) == 1 and sha(got[0]) == sha(sent), f"{name}: instance retrieve is not the bytes sent")
        single = dw._http_get(resource, headers={"Accept": "application/dicom; transfer-syntax=*"})
        check(single.status_code == 200 and sha(single.content) == sha(sent), f"{name}: single-part retrieve")
        result["instances"] += 1

    # Explicit VR Little Endian: compressed instances decoded, native ones transcoded.
    for name, (ds, sent) in stored.items():
        original = pydicom.dcmread(io.BytesIO(sent))
        syntax = str(original.file_meta.TransferSyntaxUID)
        if syntax == EXPLICIT_LE or "PixelData" not in original:
            continue
        resource = f"{url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
        got = parts(dw, resource, f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT_LE}')
        check(len(got) == 1, f"{name}: {len(got)} parts")
        returned = pydicom.dcmread(io.BytesIO(got[0]))
        check(str(returned.file_meta.TransferSyntaxUID) == EXPLICIT_LE,
              f"{name}: came back in {returned.file_meta.TransferSyntaxUID}")
        check(returned.SOPInstanceUID == ds.SOPInstanceUID, f"{name}: another instance came back")
        if syntax not in LOSSLESS:
            continue  # lossy: another decoder may round differently
        mine, theirs = returned.pixel_array, original.pixel_array
        check(mine.shape == theirs.shape, f"{name}: pixels of shape {mine.shape}, pydicom {theirs.shape}")
        check(numpy.array_equal(mine, theirs), f"{name}: decoded pixels differ from pydicom's decoding")
        if original.file_meta.TransferSyntaxUID.is_compressed:
            result["decompressed"] += 1
        else:
            result["transcoded"] += 1
    emit(result)


main()
