import Dispatch

/// How many of kv-fcgi's worker threads take requests at once.
///
/// The fewer workers take requests, the more requests each finds ready when it does, and the
/// more of them share one store round trip: on 2 cores, with nginx holding 50 client
/// connections, 2 workers answered 1.7× the GETs of 16 workers all taking requests
/// (docs/BENCHMARKS.md). The other threads stand by: a worker about to move a large body or
/// response steps aside first (`Turn.stepAside`), and a standing-by thread takes its turn, so a
/// small request never waits behind a large one.
final class WorkerTurns: @unchecked Sendable {
    private let free: DispatchSemaphore

    init(count: Int) {
        free = DispatchSemaphore(value: max(1, count))
    }

    /// One thread's hold on a turn; used by that thread only.
    final class Turn {
        private let turns: WorkerTurns
        private var held = false

        init(_ turns: WorkerTurns) { self.turns = turns }

        /// Waits for a free turn (before taking requests).
        func take() {
            guard !held else { return }
            turns.free.wait()
            held = true
        }

        /// Gives the turn to another thread: before long work, and once a batch is answered.
        func stepAside() {
            guard held else { return }
            held = false
            turns.free.signal()
        }
    }
}
