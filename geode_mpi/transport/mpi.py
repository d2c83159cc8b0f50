"""The MPI transport: nonblocking sends, matched-probe receives, frames as raw memory.

Every envelope is one MPI message on `TAG_ENVELOPE`: a transport header, a frame table, the
meta bytes, and the small frames inline. Frames larger than ``inline_max`` go as their own MPI
messages on `TAG_FRAME`, sent from the array's memory (strided arrays through an MPI derived
datatype, so nothing is copied on the send side), and they go *before* their envelope; to a rank
over the network (`paths.network_ranks`) *after* it (`FRAMES_AFTER`), into receives posted as
it comes.

The receiver takes everything with matched probes on any tag. MPI never lets two messages from
one sender overtake each other when both match the same receive, so per source the receiver sees
a message's frames, then its envelope, in the order sent. A probed frame is held matched (its
size is in the probe's status); its envelope, right behind it, is received and parsed, and only
then are its frames received: the per-message Python work runs before the big copy, on a warm
cache, and not after it on a cache the copy has just evicted. See docs/wire-format.md.
"""

from __future__ import annotations

from geode_mpi.transport.mpi_batches import BATCH_BYTES as BATCH_BYTES
from geode_mpi.transport.mpi_batches import BATCH_DELAY as BATCH_DELAY
from geode_mpi.transport.mpi_batches import BATCH_MAX as BATCH_MAX
from geode_mpi.transport.mpi_batches import Batches
from geode_mpi.transport.mpi_collective import CollectiveSteps
from geode_mpi.transport.mpi_leads import LeadArrivals
from geode_mpi.transport.mpi_parts import _BATCH_ENTRY as _BATCH_ENTRY  # (tests read these here)
from geode_mpi.transport.mpi_parts import TAG_BATCH as TAG_BATCH
from geode_mpi.transport.mpi_parts import TAG_ENVELOPE as TAG_ENVELOPE
from geode_mpi.transport.mpi_parts import TAG_FRAME as TAG_FRAME
from geode_mpi.transport.mpi_parts import TAG_META as TAG_META
from geode_mpi.transport.mpi_parts import TAG_STREAM as TAG_STREAM
from geode_mpi.transport.mpi_receiving import Receiving
from geode_mpi.transport.mpi_sending import Sending
from geode_mpi.transport.mpi_setup import Setup
from geode_mpi.transport.mpi_streams import Streams
from geode_mpi.transport.mpi_waiting import Waiting


class MPITransport(
    Setup, Sending, Batches, Receiving, LeadArrivals, Waiting, Streams, CollectiveSteps
):
    """Transport over a private duplicate of an MPI communicator.

    Args:
        comm: the communicator whose ranks are the job (duplicated here, collectively).
        inline_max: frames up to this many bytes travel inside the envelope.
    """

    name = "MPI"
