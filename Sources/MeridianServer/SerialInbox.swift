import NIOConcurrencyHelpers
import NIOPosix

/// Inputs queued from any thread and handed in order, in batches, to one consumer on a thread of
/// its own: how the strong and the cluster engines run their state machines without making an
/// event loop wait. A batch is everything queued when the consumer looked; inputs queued while
/// it runs make the next batch.
final class SerialInbox<Input>: @unchecked Sendable {
    private struct State {
        var inputs: [Input] = []
        var draining = false
        var stopped = false
        /// Inputs queued before `start` wait for it (a thread pool not started yet cancels work).
        var started = false
    }

    private let thread = NIOThreadPool(numberOfThreads: 1)
    private let state = NIOLockedValueBox(State())
    /// Set once by `start`, read on the consumer's thread (a stored property under a plain lock,
    /// not a closure in a generic box: see `ClusterEngine.callbacks`).
    private let consumerLock = NIOLock()
    private var consumer: (([Input]) -> Void)?

    /// Starts the thread; every batch goes to `consume`, on it.
    func start(consuming consume: @escaping ([Input]) -> Void) {
        consumerLock.withLock { consumer = consume }
        thread.start()
        let pending = state.withLockedValue { state -> Bool in
            state.started = true
            guard !state.inputs.isEmpty, !state.draining else { return false }
            state.draining = true
            return true
        }
        if pending { submitDrain() }
    }

    /// Queues `inputs` behind everything queued (nothing after `stop`).
    func enqueue(_ inputs: [Input]) {
        let start = state.withLockedValue { state -> Bool in
            guard !state.stopped else { return false }
            state.inputs.append(contentsOf: inputs)
            if state.draining || !state.started { return false }
            state.draining = true
            return true
        }
        if start { submitDrain() }
    }

    private func submitDrain() {
        thread.submit { [self] work in
            guard case .active = work else { return }
            drain()
        }
    }

    /// Puts `inputs` before everything queued: the consumer's own follow-ups to the batch it
    /// just ran (call from the consumer, which drains again before it returns).
    func enqueueFirst(_ inputs: [Input]) {
        state.withLockedValue { $0.inputs.insert(contentsOf: inputs, at: 0) }
    }

    /// Takes no more inputs and waits for the thread to end.
    func stop() {
        state.withLockedValue { $0.stopped = true }
        try? thread.syncShutdownGracefully()
    }

    private func drain() {
        guard let consume = consumerLock.withLock({ consumer }) else { return }
        while true {
            let inputs = state.withLockedValue { state -> [Input] in
                let taken = state.inputs
                state.inputs = []
                if taken.isEmpty { state.draining = false }
                return taken
            }
            if inputs.isEmpty { return }
            consume(inputs)
        }
    }
}
