"""WADO-RS metadata at study, series and instance level checked against the
stored data sets, and every BulkDataURI fetched (whole, and with Range).

argv: SPEC_JSON {"url": DICOMweb root, "files": [test file names]}
The files are stored first (STOW-RS with unique SOP Instance UIDs).
prints {"instances": n, "attributes": n compared, "bulk": n URIs fetched,
        "ranges": n range requests, "big_endian": n instances from big-endian files,
        "etag": {...}}"""

import sys

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import DSfloat, IS, PersonName

sys.dont_write_bytecode = True  # importing dw_util must leave no __pycache__ in the tree
from dw_util import authorized_session, check, client, emit, fail, spec, stow_broad_set

# JSON text is Unicode, so the character set does not apply; trailing padding
# is not an attribute.
SKIPPED = {0x00080005, 0xFFFCFFFC}


def same_value(vr, original, returned):
    """Whether an original value equals what came back through DICOM JSON."""
    def as_list(value):
        if isinstance(value, (MultiValue, list, tuple)):
            return list(value)
        return [] if value is None or value == "" else [value]

    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return bytes(original or b"") == bytes(returned or b"")
    first, second = as_list(original), as_list(returned)
    if len(first) != len(second):
        return False
    for a, b in zip(first, second):
        if vr in ("DS", "FL", "FD"):
            if abs(float(a) - float(b)) > 1e-6 * max(1.0, abs(float(a))):
                return False
        elif vr in ("IS", "US", "SS", "UL", "SL", "UV", "SV"):
            if int(a) != int(b):
                return False
        elif vr == "PN":
            if str(PersonName(a)).rstrip("^= ") != str(PersonName(b)).rstrip("^= "):
                return False
        elif vr == "AT":
            if int(a) != int(b):
                return False
        elif str(a).rstrip(" \x00") != str(b).rstrip(" \x00"):
            return False
    return True


# The unit of byte swapping of binary VRs.
UNITS = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def little_endian(value, unit):
    data = bytearray(value or b"")
    for start in range(0, len(data) - len(data) % unit, unit):
        data[start:start + unit] = data[start:start + unit][::-1]
    return bytes(data)


def compare(original, returned, path, counts):
    """Every attribute of `original` must be in `returned` with the same value."""
    for element in original:
        if element.tag in SKIPPED or element.tag.is_private or element.tag.element == 0:
            continue
        where = f"{path}{element.tag}"
        if element.tag not in returned:
            fail(f"{where} {element.keyword} is missing from the metadata")
        other = returned[element.tag]
        if element.VR == "SQ":
            check(len(element.value) == len(other.value), f"{where}: {len(other.value)} items, not {len(element.value)}")
            for index, (a, b) in enumerate(zip(element.value, other.value)):
                a.big_endian, a.file_meta_compressed = original.big_endian, False
                compare(a, b, f"{where}[{index}].", counts)
            continue
        if element.tag == 0x7FE00010 and original.file_meta_compressed:
            continue
        value = element.value
        if original.big_endian and element.VR in UNITS:
            # DICOM JSON and bulk data are little endian, whatever the file's order.
            unit = UNITS[element.VR]
            if element.tag == 0x7FE00010:
                unit = max(unit, int(original.BitsAllocated) // 8)
            value = little_endian(value, unit)
        if not same_value(element.VR, value, other.value):
            fail(f"{where} {element.keyword} ({element.VR}): metadata has {other.value!r:.200}, the file {element.value!r:.200}")
        counts["attributes"] += 1


def main():
    options = spec()
    dw = client(options["url"])
    stored = stow_broad_set(dw, options["files"])
    session = authorized_session()
    counts = {"instances": 0, "attributes": 0, "bulk": 0, "ranges": 0, "big_endian": 0}

    def fetch(uri):
        """A BulkDataURI's value, checked whole and in two ranges."""
        response = session.get(uri, headers={"Accept": "application/octet-stream"})
        check(response.status_code == 200, f"GET {uri}: {response.status_code} {response.text[:200]}")
        whole = response.content
        counts["bulk"] += 1
        if len(whole) >= 4:
            first, last = 1, len(whole) // 2
            ranged = session.get(uri, headers={"Accept": "application/octet-stream", "Range": f"bytes={first}-{last}"})
            check(ranged.status_code == 206, f"ranged GET {uri}: {ranged.status_code}")
            wanted = f"bytes {first}-{last}/{len(whole)}"
            check(ranged.headers.get("Content-Range") == wanted,
                  f"ranged GET {uri}: Content-Range {ranged.headers.get('Content-Range')!r}, not {wanted!r}")
            check(ranged.content == whole[first:last + 1], f"ranged GET {uri}: wrong bytes")
            suffix = session.get(uri, headers={"Range": "bytes=-3"})
            check(suffix.status_code == 206 and suffix.content == whole[-3:], f"suffix range of {uri}")
            counts["ranges"] += 2
        return whole

    by_study = {}
    for name, (ds, _) in stored.items():
        by_study.setdefault(str(ds.StudyInstanceUID), []).append((name, ds))
    for study, members in by_study.items():
        study_md = dw.retrieve_study_metadata(study)
        check(len(study_md) == len(members), f"study {study}: metadata of {len(study_md)} instances, not {len(members)}")
        for name, ds in members:
            series_md = dw.retrieve_series_metadata(study, str(ds.SeriesInstanceUID))
            in_series = [d for _, d in members if d.SeriesInstanceUID == ds.SeriesInstanceUID]
            check(len(series_md) == len(in_series), f"series of {name}: {len(series_md)} instances")
            md = dw.retrieve_instance_metadata(study, str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
            for listing in (study_md, series_md):
                found = [m for m in listing if m.get("00080018", {}).get("Value") == [str(ds.SOPInstanceUID)]]
                check(found == [md], f"{name}: study/series metadata differs from the instance's")
            returned = Dataset.from_json(md, bulk_data_uri_handler=fetch)
            ds.file_meta_compressed = ds.file_meta.TransferSyntaxUID.is_compressed
            ds.big_endian = not ds.file_meta.TransferSyntaxUID.is_little_endian
            counts["big_endian"] += ds.big_endian
            compare(ds, returned, f"{name} ", counts)
            counts["instances"] += 1

    # A conditional GET of unchanged metadata is answered 304.
    name, (ds, _) = next(iter(stored.items()))
    url = f"{options['url']}/studies/{ds.StudyInstanceUID}/metadata"
    first = session.get(url, headers={"Accept": "application/dicom+json"})
    etag = first.headers.get("ETag")
    check(first.status_code == 200 and etag, f"metadata has no ETag: {first.status_code} {dict(first.headers)}")
    again = session.get(url, headers={"Accept": "application/dicom+json", "If-None-Match": etag})
    check(again.status_code == 304 and not again.content, f"If-None-Match: {again.status_code}, not 304")
    other = session.get(url, headers={"Accept": "application/dicom+json", "If-None-Match": '"stale"'})
    check(other.status_code == 200, f"stale If-None-Match: {other.status_code}")
    counts["etag"] = {"status_first": first.status_code, "status_again": again.status_code}
    emit(counts)


main()
