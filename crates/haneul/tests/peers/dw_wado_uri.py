"""WADO-URI (PS3.18 9) with requests, after a STOW-RS of the broad set by
dicomweb-client: contentType=application/dicom in the stored transfer syntax is
byte-identical to the file sent, and without transferSyntax it is Explicit VR
Little Endian with the same pixels; contentType=image/jpeg (also the default)
is a JPEG of the image's size, rows/columns scale it, frameNumber picks a
frame and windowCenter/windowWidth change it; missing parameters are a 400 and
an unknown object a 404.

argv: SPEC_JSON {"url": DICOMweb root, "http": HTTP root, "files": [test file names]}
prints {"identical": n, "explicit_le": n, "jpeg": n, "errors": {case: status}}"""

import io
import sys

import numpy
import pydicom
from PIL import Image

sys.dont_write_bytecode = True  # importing dw_util must leave no __pycache__ in the tree
from dw_util import LOSSLESS, authorized_session, check, client, emit, spec, stow_broad_set

EXPLICIT_LE = "1.2.840.10008.1.2.1"


def main():
    options = spec()
    dw = client(options["url"])
    wado = f"{options['http']}/wado"
    session = authorized_session()
    stored = stow_broad_set(dw, options["files"])
    result = {"identical": 0, "explicit_le": 0, "jpeg": 0, "errors": {}}

    def get(ds, **params):
        query = {"requestType": "WADO", "studyUID": str(ds.StudyInstanceUID),
                 "seriesUID": str(ds.SeriesInstanceUID), "objectUID": str(ds.SOPInstanceUID)}
        query.update(params)
        return session.get(wado, params=query)

    for name, (ds, sent) in stored.items():
        original = pydicom.dcmread(io.BytesIO(sent))
        syntax = str(original.file_meta.TransferSyntaxUID)
        answer = get(ds, contentType="application/dicom", transferSyntax=syntax)
        check(answer.status_code == 200, f"{name}: application/dicom in {syntax}: {answer.status_code} {answer.text[:200]}")
        check(answer.headers.get("Content-Type", "").startswith("application/dicom"),
              f"{name}: Content-Type {answer.headers.get('Content-Type')!r}")
        check(answer.content == sent, f"{name}: application/dicom in the stored syntax is not the bytes sent")
        result["identical"] += 1

        # No transferSyntax: Explicit VR Little Endian (PS3.18 9.1.2.1.8).
        answer = get(ds, contentType="application/dicom")
        if syntax == EXPLICIT_LE:
            check(answer.status_code == 200 and answer.content == sent, f"{name}: default syntax is not the file")
        elif answer.status_code == 200:
            returned = pydicom.dcmread(io.BytesIO(answer.content))
            check(str(returned.file_meta.TransferSyntaxUID) == EXPLICIT_LE,
                  f"{name}: default syntax {returned.file_meta.TransferSyntaxUID}")
            check(returned.SOPInstanceUID == ds.SOPInstanceUID, f"{name}: another instance")
            if "PixelData" in original and syntax in LOSSLESS:
                check(numpy.array_equal(returned.pixel_array, original.pixel_array), f"{name}: pixels differ")
            result["explicit_le"] += 1
        else:
            # Only a lossy or undecodable stored syntax may be refused, with a 406.
            check(answer.status_code == 406 and syntax not in LOSSLESS,
                  f"{name}: default syntax from {syntax}: {answer.status_code} {answer.text[:200]}")

        if "PixelData" not in original or original.file_meta.TransferSyntaxUID.is_deflated:
            continue
        size = (int(original.Columns), int(original.Rows))
        for params in ({}, {"contentType": "image/jpeg"}):
            answer = get(ds, **params)
            check(answer.status_code == 200, f"{name}: image/jpeg {params}: {answer.status_code} {answer.text[:200]}")
            check(answer.headers.get("Content-Type") == "image/jpeg" and answer.content[:2] == b"\xff\xd8",
                  f"{name}: not a JPEG: {answer.headers.get('Content-Type')!r}")
            check(Image.open(io.BytesIO(answer.content)).size == size, f"{name}: JPEG is not {size}")
        result["jpeg"] += 1

    # Rows and columns, frames and windows, on images that have them.
    ds, sent = stored["CT_small.dcm"]
    answer = get(ds, contentType="image/png", columns="64", rows="64")
    check(answer.status_code == 200 and Image.open(io.BytesIO(answer.content)).size == (64, 64),
          f"columns=64&rows=64: {answer.status_code}")
    one = get(ds, contentType="image/png", windowCenter="40", windowWidth="400").content
    other = get(ds, contentType="image/png", windowCenter="1000", windowWidth="200").content
    check(Image.open(io.BytesIO(one)).tobytes() != Image.open(io.BytesIO(other)).tobytes(),
          "two windows give the same image")
    ds, sent = stored["SC_rgb_rle_2frame.dcm"]
    frames = [get(ds, contentType="image/png", frameNumber=str(n)) for n in (1, 2, 3)]
    check(frames[0].status_code == 200 and frames[1].status_code == 200, "frameNumber 1 and 2")
    check(Image.open(io.BytesIO(frames[0].content)).tobytes() != Image.open(io.BytesIO(frames[1].content)).tobytes(),
          "frameNumber=2 renders frame 1")
    check(frames[2].status_code == 404, f"frameNumber=3 of 2: {frames[2].status_code}")

    # Client mistakes: readable 4xx, never 500.
    cases = {
        "no requestType": ({"requestType": None}, 400),
        "requestType other": ({"requestType": "XYZ"}, 400),
        "no objectUID": ({"objectUID": None}, 400),
        "unknown objectUID": ({"objectUID": "1.2.3.4.5.6.7.8.9"}, 404),
        "contentType text/html": ({"contentType": "text/html"}, 406),
        "windowWidth without center": ({"windowWidth": "100"}, 400),
        "rows not a number": ({"rows": "abc"}, 400),
    }
    for case, (change, status) in cases.items():
        query = {"requestType": "WADO", "studyUID": str(ds.StudyInstanceUID),
                 "seriesUID": str(ds.SeriesInstanceUID), "objectUID": str(ds.SOPInstanceUID)}
        query.update(change)
        query = {k: v for k, v in query.items() if v is not None}
        answer = session.get(wado, params=query)
        check(answer.status_code == status, f"WADO-URI {case}: {answer.status_code}, not {status}: {answer.text[:200]}")
        check(answer.json().get("error"), f"WADO-URI {case}: no readable error: {answer.text[:200]}")
        result["errors"][case] = answer.status_code
    emit(result)


main()
