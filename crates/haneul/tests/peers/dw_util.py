"""Shared helpers for the dicomweb-client peers (imported by dw_*.py; not run alone).

Every peer takes one JSON spec as its last argument, prints one JSON document
on stdout and exits non-zero with a message on stderr when a check fails.
Set DW_DEBUG=1 for dicomweb-client's debug log."""

import hashlib
import io
import json
import logging
import os
import sys
import warnings

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import UID

if os.environ.get("DW_DEBUG"):
    logging.basicConfig(level=logging.DEBUG)

# pydicom warns about odd test files and dicomweb-client about single-part
# answers; neither is a finding here, and the output must stay one JSON line.
warnings.simplefilter("ignore")

DATA = os.path.join(os.path.dirname(pydicom.__file__), "data")
TEST_FILES = os.path.join(DATA, "test_files")
CHARSET_FILES = os.path.join(DATA, "charset_files")

# A broad set of pydicom's test files: every native syntax (big endian and
# deflate included), RLE, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000,
# multi-frame, colour, 1-bit segmentation, SR, waveform and RT objects.
BROAD_SET = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEG2000.dcm",
    "JPGExtended.dcm",
    "693_J2KI.dcm",
    "SC_rgb_rle.dcm",
    "SC_rgb_rle_16bit.dcm",
    "SC_rgb_rle_2frame.dcm",
    "SC_rgb_rle_32bit_2frame.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "SC_rgb_gdcm_KY.dcm",
    "SC_rgb_small_odd.dcm",
    "SC_rgb_small_odd_big_endian.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
    "ExplVR_BigEnd.dcm",
    "image_dfl.dcm",
    "liver_1frame.dcm",
    "rtdose.dcm",
    "rtdose_rle.dcm",
    "examples_jpeg2k.dcm",
    "examples_palette.dcm",
    "examples_ybr_color.dcm",
    "reportsi.dcm",
    "test-SR.dcm",
    "rtplan.dcm",
    "waveform_ecg.dcm",
]

# Transfer syntaxes whose stored pixel data decodes to exactly pydicom's pixel_array.
LOSSLESS = {
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90",
}


# Credentials from the spec ("token"), sent with every request.
AUTHORIZATION = {}


def spec():
    """The JSON spec passed as the last command-line argument; "files"
    defaults to the broad set."""
    document = json.loads(sys.argv[-1])
    document.setdefault("files", BROAD_SET)
    if document.get("token"):
        AUTHORIZATION["Authorization"] = "Bearer " + document["token"]
    return document


def emit(document):
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def fail(message):
    sys.stderr.write(f"check failed: {message}\n")
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def client(url):
    # dicomweb-client retries nothing by default, so a 5xx shows up as it is.
    return DICOMwebClient(url, timeout=60, headers=dict(AUTHORIZATION))


def authorized_session():
    """A requests session that sends the spec's credentials."""
    http = requests.Session()
    http.headers.update(AUTHORIZATION)
    return http


def unique_uid(name, what):
    """A UID of our own for `what` of test file `name` (stable across runs)."""
    return pydicom.uid.generate_uid(entropy_srcs=["haneul-dicomweb-interop", name, what])


# JPGExtended.dcm shares its series with JPEG2000.dcm but names another
# institution; the archive keeps one record per series, so it gets its own.
OWN_SERIES = {"JPGExtended.dcm"}


def load(name, directory=TEST_FILES, unique=True):
    """A test file as a data set, with a SOP Instance UID of its own when
    `unique` (pydicom's variants of one image share theirs, and the archive
    would keep only the first)."""
    ds = pydicom.dcmread(os.path.join(directory, name))
    if unique:
        uid = unique_uid(name, "sop")
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        if name in OWN_SERIES:
            ds.SeriesInstanceUID = unique_uid(name, "series")
    return ds


def encode(ds):
    """The Part 10 bytes dicomweb-client's store_instances sends for `ds`."""
    with io.BytesIO() as out:
        pydicom.dcmwrite(out, ds)
        return out.getvalue()


def stow(dw, datasets, study=None):
    """store_instances, returning (response data set, {SOP Instance UID: bytes sent})."""
    sent = {}
    original = dw._http_post_multipart_application_dicom

    def capture(url, data):
        parts = list(data)
        for part in parts:
            ds = pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True, force=True)
            sent[str(ds.get("SOPInstanceUID", ""))] = part
        return original(url, parts)

    dw._http_post_multipart_application_dicom = capture
    try:
        response = dw.store_instances(datasets, study_instance_uid=study)
    finally:
        dw._http_post_multipart_application_dicom = original
    return response, sent


def stow_raw(dw, parts):
    """POST raw Part 10 files (possibly malformed) with dicomweb-client's multipart encoder."""
    url = dw._get_studies_url(dw_transaction("STORE"))
    return dw._http_post_multipart_application_dicom(url, parts)


def dw_transaction(name):
    from dicomweb_client.web import _Transaction

    return getattr(_Transaction, name)


def stow_outcome(response):
    """The STOW-RS response as plain lists."""
    referenced = [
        {
            "class": str(item.get("ReferencedSOPClassUID", "")),
            "instance": str(item.get("ReferencedSOPInstanceUID", "")),
            "warning": int(item.WarningReason) if "WarningReason" in item else None,
            "url": str(item.get("RetrieveURL", "")),
        }
        for item in response.get("ReferencedSOPSequence", [])
    ]
    failed = [
        {
            "class": str(item.get("ReferencedSOPClassUID", "")),
            "instance": str(item.get("ReferencedSOPInstanceUID", "")),
            "reason": int(item.FailureReason) if "FailureReason" in item else None,
        }
        for item in response.get("FailedSOPSequence", [])
    ]
    return referenced, failed


def stow_broad_set(dw, names=BROAD_SET):
    """STOW-RS the broad set with unique SOP Instance UIDs; every one must be
    referenced without a failure. Returns {name: (data set, bytes sent)}."""
    datasets = {name: load(name) for name in names}
    response, sent = stow(dw, list(datasets.values()))
    referenced, failed = stow_outcome(response)
    check(not failed, f"STOW-RS of the broad set failed for {failed}")
    wanted = {str(ds.SOPInstanceUID) for ds in datasets.values()}
    got = {item["instance"] for item in referenced}
    check(got == wanted, f"ReferencedSOPSequence names {sorted(got ^ wanted)} unexpectedly")
    return {name: (ds, sent[str(ds.SOPInstanceUID)]) for name, ds in datasets.items()}


def value_of(item, keyword):
    """The first value of a DICOM JSON attribute, by keyword."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    entry = item.get(f"{tag:08X}", {})
    values = entry.get("Value") or []
    return values[0] if values else None


def values_of(item, keyword):
    tag = pydicom.datadict.tag_for_keyword(keyword)
    return item.get(f"{tag:08X}", {}).get("Value") or []


def digest(data):
    return hashlib.sha256(bytes(data)).hexdigest()[:16]


def is_uid(text):
    return UID(text).is_valid
