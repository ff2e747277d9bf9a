"""C-MOVE studies to a pynetdicom Storage SCP run here (the move destination,
a [[known_ae]] of the server), optionally cancelling with C-CANCEL after the
first pending response.

argv: HOST PORT SPEC_JSON {"calling_ae": str, "dest_ae": str, "dest_port": int,
   "store_delay": float (seconds the destination takes per instance),
   "store_hang": float (seconds the destination holds its first C-STORE answer back, or
                 until that move has ended, whichever comes first),
   "moves": [{"study_uid": str, "cancel_after": int|null}]}
prints {"moves": [{"study_uid", "status", "counts", "comment", "pending", "cancel_sent",
                   "received": [sop_uid, ...]}], "destination_callers": [ae_title, ...]}"""

import sys
import threading
import time

from pydicom.dataset import Dataset
from pynetdicom import ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

sys.dont_write_bytecode = True  # importing pn_util must leave no __pycache__ in the tree
from pn_util import comment_of, counts_of, emit, new_ae, spec, status_of, wait_until


def main():
    host, port, s = sys.argv[1], int(sys.argv[2]), spec()
    lock = threading.Lock()
    received = []
    callers = []
    delay = float(s.get("store_delay", 0))
    hang = float(s.get("store_hang", 0))
    moves_ended = threading.Event()
    hung = []

    def on_store(event):
        if delay:
            time.sleep(delay)  # a slow destination, part of the scenario
        if hang and not hung:
            hung.append(True)
            moves_ended.wait(hang)  # a destination that stops answering, part of the scenario
        with lock:
            received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def on_open(event):
        with lock:
            callers.append(event.assoc.requestor.ae_title)

    dest = new_ae(s["dest_ae"])
    for cx in StoragePresentationContexts:
        dest.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    server = dest.start_server(("127.0.0.1", s["dest_port"]), block=False,
                               evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_ESTABLISHED, on_open)])
    try:
        ae = new_ae(s.get("calling_ae", "PNMOVE"))
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate(host, port, ae_title=s.get("called_ae", "HANEUL"))
        if not assoc.is_established:
            raise SystemExit(f"association to {host}:{port} failed")
        context_id = assoc.accepted_contexts[0].context_id
        moves = []
        for n, move in enumerate(s["moves"]):
            with lock:
                received.clear()
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = move["study_uid"]
            msg_id = 200 + n
            result = {"study_uid": move["study_uid"], "status": None, "counts": None, "comment": None,
                      "pending": 0, "cancel_sent": False}
            for rsp, _identifier in assoc.send_c_move(query, s["dest_ae"], StudyRootQueryRetrieveInformationModelMove,
                                                      msg_id=msg_id):
                code = status_of(rsp)
                if code in (0xFF00, 0xFF01):
                    result["pending"] += 1
                    if move.get("cancel_after") == result["pending"] and not result["cancel_sent"]:
                        assoc.send_c_cancel(msg_id, context_id)
                        result["cancel_sent"] = True
                    continue
                result.update(status=code, counts=counts_of(rsp), comment=comment_of(rsp))
            moves_ended.set()
            # The server releases its destination association before the final
            # response; wait (bounded) until the destination has seen it go.
            wait_until(lambda: not server.active_associations, 10)
            with lock:
                result["received"] = list(received)
            moves.append(result)
        assoc.release()
    finally:
        moves_ended.set()
        server.shutdown()
    emit({"moves": moves, "destination_callers": callers})


main()
