"""STOW-RS with dicomweb-client: the broad set of pydicom test files, the
same files again (duplicates), malformed files among good ones, a request
of only malformed files, and a store into a named study; then every stored
instance is found by QIDO-RS and its RetrieveURL gives back the bytes sent.

argv: SPEC_JSON {"url": DICOMweb root, "files": [test file names], "bad": [test file names]}
prints {"stored": n, "retrieve_urls": n, "duplicates": {...}, "bad": {...},
        "all_bad": {...}, "into_study": {...}, "found": n}"""

import io
import os
import sys

import pydicom

sys.dont_write_bytecode = True  # importing dw_util must leave no __pycache__ in the tree
from dw_util import (
    TEST_FILES,
    authorized_session,
    check,
    client,
    emit,
    encode,
    load,
    spec,
    stow,
    stow_broad_set,
    stow_outcome,
    stow_raw,
    unique_uid,
)

# Failure Reasons PS3.18 Table 10.5.3-2 and PS3.4 allow for a refused instance.
FAILURE_REASONS = {0xA700, 0xA900, 0xC000, 0x0110, 0x0111, 0x0122, 0x0124, 0xC122}


def main():
    options = spec()
    url = options["url"]
    dw = client(url)
    session = authorized_session()
    stored = stow_broad_set(dw, options["files"])
    result = {"stored": len(stored)}

    # Each RetrieveURL is the instance's WADO-RS resource and gives back the bytes sent.
    response, _ = stow(dw, [load(options["files"][0])])
    referenced, _ = stow_outcome(response)
    checked = 0
    for name, (ds, sent) in stored.items():
        wanted = (f"{url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                  f"/instances/{ds.SOPInstanceUID}")
        answer = session.get(wanted, headers={"Accept": "application/dicom; transfer-syntax=*"})
        check(answer.status_code == 200 and answer.content == sent,
              f"{name}: GET {wanted} gave {answer.status_code} and not the bytes sent")
        checked += 1
    urls = {item["instance"]: item["url"] for item in referenced}
    for instance, retrieve_url in urls.items():
        ds = next(d for d, _ in stored.values() if str(d.SOPInstanceUID) == instance)
        wanted = (f"{url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                  f"/instances/{ds.SOPInstanceUID}")
        check(retrieve_url == wanted, f"RetrieveURL {retrieve_url!r} is not {wanted!r}")
    result["retrieve_urls"] = checked

    # The same bytes again are already stored: success, as with C-STORE, and nothing stored twice.
    again = [load(name) for name in options["files"][:3]]
    response, _ = stow(dw, again)
    referenced, failed = stow_outcome(response)
    check(not failed, f"the same instances again failed: {failed}")
    check({r["instance"] for r in referenced} == {str(d.SOPInstanceUID) for d in again},
          f"the same instances again: referenced {referenced}")
    warnings = [r["warning"] for r in referenced]
    check(warnings == [None] * len(again), f"the same bytes again are not plain successes: {referenced}")
    for ds in again:
        found = dw.search_for_instances(search_filters={"SOPInstanceUID": str(ds.SOPInstanceUID)})
        check(len(found) == 1, f"{ds.SOPInstanceUID} found {len(found)} times after a second store")
    # Two of pydicom's files that share one SOP Instance UID with other
    # content, in one request: the first is kept, the second is a duplicate.
    twins = [load("MR_small.dcm", unique=False), load("MR_small_RLE.dcm", unique=False)]
    response, _ = stow(dw, twins)
    referenced, failed = stow_outcome(response)
    check(not failed and len(referenced) == 2, f"twins: {referenced} {failed}")
    check(referenced[0]["warning"] is None and referenced[1]["warning"] is not None,
          f"only the second twin is a duplicate: {referenced}")
    twin_uid = str(twins[0].SOPInstanceUID)
    found = dw.search_for_instances(search_filters={"SOPInstanceUID": twin_uid}, fields=["00020010"])
    check(len(found) == 1, f"twins: {len(found)} instances found, not 1")
    result["duplicates"] = {"again": len(again), "twin_warning": referenced[1]["warning"]}

    # Malformed files among good ones: 202, each refused part in the Failed SOP Sequence.
    bad_parts = [open(os.path.join(TEST_FILES, name), "rb").read() for name in options["bad"]]
    good = load("CT_small.dcm")
    good.SOPInstanceUID = good.file_meta.MediaStorageSOPInstanceUID = unique_uid("CT_small.dcm", "among bad")
    parts = bad_parts + [b"this part is not DICOM at all", encode(good)]
    response = stow_raw(dw, parts)
    referenced, failed = stow_outcome(response)
    check([r["instance"] for r in referenced] == [str(good.SOPInstanceUID)], f"among bad: referenced {referenced}")
    check(len(failed) == len(parts) - 1, f"{len(failed)} failures for {len(parts) - 1} bad parts: {failed}")
    check(all(f["reason"] in FAILURE_REASONS for f in failed), f"failure reasons: {failed}")
    # A refused part with file meta information is named by its UIDs.
    named = 0
    for part, item in zip(bad_parts, failed):
        try:
            meta = pydicom_meta(part)
        except ValueError:
            continue
        check(item["instance"] == meta.get("MediaStorageSOPInstanceUID", ""),
              f"refused part names {item['instance']!r}, its meta {meta.get('MediaStorageSOPInstanceUID')!r}")
        check(item["class"] == meta.get("MediaStorageSOPClassUID", ""), f"refused part class {item['class']!r}")
        named += 1
    for item in failed:
        # MR_truncated.dcm shares its UID with MR_small.dcm, stored above.
        if item["instance"] and item["instance"] != twin_uid:
            check(not dw.search_for_instances(search_filters={"SOPInstanceUID": item["instance"]}),
                  f"refused instance {item['instance']} is found")
    result["bad"] = {"failed": len(failed), "named": named, "reasons": sorted({f["reason"] for f in failed})}

    # Only malformed files: 409 Conflict, still with the Failed SOP Sequence.
    answer = session.post(
        f"{url}/studies",
        data=dw._encode_multipart_message(bad_parts, 'multipart/related; type="application/dicom"; boundary=b0undary'),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'},
    )
    check(answer.status_code == 409, f"only bad parts: {answer.status_code}, not 409")
    body = answer.json()
    check(len(body.get("00081198", {}).get("Value", [])) == len(bad_parts), f"only bad parts: {body}")
    result["all_bad"] = {"status": answer.status_code}

    # Into a named study: an instance of another study is refused.
    mine = load("CT_small.dcm")
    mine.SOPInstanceUID = mine.file_meta.MediaStorageSOPInstanceUID = unique_uid("CT_small.dcm", "into study")
    other = load("MR_small.dcm")
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = unique_uid("MR_small.dcm", "into study")
    response, _ = stow(dw, [mine, other], study=str(mine.StudyInstanceUID))
    referenced, failed = stow_outcome(response)
    check([r["instance"] for r in referenced] == [str(mine.SOPInstanceUID)], f"into study: referenced {referenced}")
    check([f["instance"] for f in failed] == [str(other.SOPInstanceUID)], f"into study: failed {failed}")
    check(str(response.get("RetrieveURL", "")) == f"{url}/studies/{mine.StudyInstanceUID}",
          f"into study: RetrieveURL {response.get('RetrieveURL')!r}")
    result["into_study"] = {"referenced": len(referenced), "failed": len(failed), "reason": failed[0]["reason"]}

    # Every instance of the broad set is found, by a list of UIDs, with its study and series.
    uids = [str(ds.SOPInstanceUID) for ds, _ in stored.values()]
    matches = dw.search_for_instances(search_filters={"SOPInstanceUID": ",".join(uids)})
    by_uid = {m["00080018"]["Value"][0]: m for m in matches}
    check(sorted(by_uid) == sorted(uids), f"found {len(by_uid)} of {len(uids)} stored instances")
    for ds, _ in stored.values():
        match = by_uid[str(ds.SOPInstanceUID)]
        check(match["0020000D"]["Value"] == [str(ds.StudyInstanceUID)]
              and match["0020000E"]["Value"] == [str(ds.SeriesInstanceUID)]
              and match["00080016"]["Value"] == [str(ds.SOPClassUID)], f"{ds.SOPInstanceUID}: {match}")
    result["found"] = len(by_uid)
    emit(result)


def pydicom_meta(part):
    """The file meta group of a Part 10 file, as keywords and values."""
    stream = io.BytesIO(part)
    stream.seek(128)
    if stream.read(4) != b"DICM":
        raise ValueError("no file meta information")
    group = pydicom.filereader._read_file_meta_info(stream)
    return {element.keyword: str(element.value) for element in group}


main()
