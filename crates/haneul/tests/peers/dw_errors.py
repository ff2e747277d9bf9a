"""Client mistakes against the DICOMweb edge: each gets the 4xx that PS3.18 and
HTTP name, with a readable JSON body ({"error": text, "status": n}), never a
500. Malformed QIDO-RS parameters (400), unknown UIDs and frames (404),
unacceptable Accept (406), an oversized STOW-RS body (413), a STOW-RS body
that is not multipart/related DICOM (415), a bad Range (416), bad rendering
parameters (400); dicomweb-client itself sees the same statuses.

argv: SPEC_JSON {"url": DICOMweb root, "max_upload_bytes": the server's limit, "files": [...]}
prints {"statuses": {case: status}}"""

import sys

import requests
from requests.exceptions import HTTPError

sys.dont_write_bytecode = True  # importing dw_util must leave no __pycache__ in the tree
from dw_util import authorized_session, check, client, emit, fail, spec, stow_broad_set

MULTIPART_DICOM = 'multipart/related; type="application/dicom"; boundary=b0undary'


def main():
    options = spec()
    url = options["url"]
    dw = client(url)
    session = authorized_session()
    stored = stow_broad_set(dw, ["CT_small.dcm", "MR_small.dcm", "SC_rgb_rle_2frame.dcm", "JPGExtended.dcm"])
    ct, _ = stored["CT_small.dcm"]
    two, _ = stored["SC_rgb_rle_2frame.dcm"]
    study, series, instance = str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID), str(ct.SOPInstanceUID)
    ct_url = f"{url}/studies/{study}/series/{series}/instances/{instance}"
    two_url = f"{url}/studies/{two.StudyInstanceUID}/series/{two.SeriesInstanceUID}/instances/{two.SOPInstanceUID}"
    unknown = "1.2.826.0.1.3680043.2.1143.999999999"
    statuses = {}

    def expect(case, status, method, target, **kwargs):
        answer = session.request(method, target, **kwargs)
        check(answer.status_code == status,
              f"{case}: {method} {target} answered {answer.status_code}, not {status}: {answer.text[:300]}")
        try:
            body = answer.json()
        except ValueError:
            fail(f"{case}: the {status} body is not JSON: {answer.text[:300]!r}")
        check(isinstance(body.get("error"), str) and len(body["error"]) > 5 and body.get("status") == status,
              f"{case}: the {status} body is not readable: {body}")
        statuses[case] = answer.status_code

    json_accept = {"Accept": "application/dicom+json"}
    # 400: malformed QIDO-RS parameters.
    for case, query in (("bad date range", "StudyDate=2020-01-01"),
                        ("date range of words", "StudyDate=yesterday-today"),
                        ("unknown includefield", "includefield=NoSuchKeyword"),
                        ("unknown attribute", "NoSuchKeyword=1"),
                        ("limit=abc", "limit=abc"),
                        ("offset=-1", "offset=-1"),
                        ("fuzzymatching=maybe", "fuzzymatching=maybe")):
        expect(f"qido {case}", 400, "GET", f"{url}/studies?{query}", headers=json_accept)
    # 404: unknown UIDs at every level, an unknown frame and an unknown resource.
    expect("unknown study", 404, "GET", f"{url}/studies/{unknown}",
           headers={"Accept": 'multipart/related; type="application/dicom"'})
    expect("unknown study metadata", 404, "GET", f"{url}/studies/{unknown}/metadata", headers=json_accept)
    expect("unknown series", 404, "GET", f"{url}/studies/{study}/series/{unknown}/metadata", headers=json_accept)
    expect("unknown instance", 404, "GET", f"{url}/studies/{study}/series/{series}/instances/{unknown}",
           headers={"Accept": "application/dicom"})
    expect("unknown instance rendered", 404, "GET",
           f"{url}/studies/{study}/series/{series}/instances/{unknown}/rendered", headers={"Accept": "image/png"})
    expect("frame beyond the last", 404, "GET", f"{two_url}/frames/3",
           headers={"Accept": "application/octet-stream"})
    expect("unknown bulk data", 404, "GET", f"{ct_url}/bulkdata/7FE00011", headers={"Accept": "application/octet-stream"})
    expect("unknown path", 404, "GET", f"{url}/nothing-here", headers=json_accept)
    # 400: bad frame lists and rendering parameters.
    expect("frame 0", 400, "GET", f"{two_url}/frames/0", headers={"Accept": "application/octet-stream"})
    expect("frame list of words", 400, "GET", f"{two_url}/frames/one,two", headers={"Accept": "application/octet-stream"})
    expect("viewport=abc", 400, "GET", f"{ct_url}/rendered?viewport=abc", headers={"Accept": "image/png"})
    expect("quality=0", 400, "GET", f"{ct_url}/rendered?quality=0", headers={"Accept": "image/jpeg"})
    expect("window without width", 400, "GET", f"{ct_url}/rendered?window=40", headers={"Accept": "image/png"})
    # 406: what the resource cannot be.
    expect("qido as text/html", 406, "GET", f"{url}/studies", headers={"Accept": "text/html"})
    expect("metadata as image/png", 406, "GET", f"{ct_url}/metadata", headers={"Accept": "image/png"})
    expect("instance in an unknown syntax", 406, "GET", ct_url,
           headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.3.4'})
    expect("native frames as image/jpeg", 406, "GET", f"{ct_url}/frames/1", headers={"Accept": "image/jpeg"})
    expect("rendered as application/pdf", 406, "GET", f"{ct_url}/rendered", headers={"Accept": "application/pdf"})
    # 416: a range beyond the value.
    bulk = f"{ct_url}/bulkdata/7FE00010"
    expect("range beyond the value", 416, "GET", bulk,
           headers={"Accept": "application/octet-stream", "Range": "bytes=99999999-"})
    # 415: STOW-RS bodies that are not multipart/related DICOM.
    part = open(__file__, "rb").read()
    expect("stow as application/json", 415, "POST", f"{url}/studies", data=b"[]",
           headers={"Content-Type": "application/json"})
    expect("stow of text parts", 415, "POST", f"{url}/studies", data=part,
           headers={"Content-Type": 'multipart/related; type="text/plain"; boundary=b0undary'})
    expect("stow without Content-Type", 415, "POST", f"{url}/studies", data=part)
    # 400: multipart without a boundary.
    expect("stow without a boundary", 400, "POST", f"{url}/studies", data=part,
           headers={"Content-Type": 'multipart/related; type="application/dicom"'})
    # 413: a body over the configured limit, announced by Content-Length and
    # streamed without one (chunked).
    limit = options["max_upload_bytes"]
    big = dw._encode_multipart_message([b"\0" * (limit + 4096)], MULTIPART_DICOM)
    expect("stow too large", 413, "POST", f"{url}/studies", data=big, headers={"Content-Type": MULTIPART_DICOM})
    expect("stow too large, chunked", 413, "POST", f"{url}/studies",
           data=(big[i:i + 65536] for i in range(0, len(big), 65536)), headers={"Content-Type": MULTIPART_DICOM})
    # 405: a method the resource does not have.
    expect("PUT on studies", 405, "PUT", f"{url}/studies", data=b"")

    # dicomweb-client raises HTTPError with the same statuses.
    for case, call, status in (
            ("client: unknown study", lambda: dw.retrieve_study_metadata(unknown), 404),
            ("client: bad date", lambda: dw.search_for_studies(search_filters={"StudyDate": "2020-01-01"}), 400),
            ("client: frame 3 of 2", lambda: dw.retrieve_instance_frames(
                str(two.StudyInstanceUID), str(two.SeriesInstanceUID), str(two.SOPInstanceUID), [3]), 404)):
        try:
            call()
        except HTTPError as error:
            check(error.response.status_code == status, f"{case}: {error.response.status_code}, not {status}")
            statuses[case] = error.response.status_code
        else:
            fail(f"{case}: no error")
    # The archive still works after all that.
    check(len(dw.search_for_instances()) == len(stored), "the stored instances changed")
    emit({"statuses": statuses})


main()
