import MeridianStorage
import NIOCore

/// The connections of one event loop that wait for a disk sync. However many of them wait,
/// the loop holds one registration with the storage engine at a time, so a sync that releases
/// forty connections wakes each event loop once rather than forty times.
///
/// Confined to its event loop: every method runs on it (checked), which is why it may be
/// handed across threads (`@unchecked Sendable`) when the node sets up its connections.
final class LoopSyncWaiters: @unchecked Sendable {
    private let loop: EventLoop
    private var waiting: [(sequence: UInt64, resume: () -> Void)] = []
    /// The sequence the engine will call back for (0: no registration).
    private var registeredFor: UInt64 = 0

    init(loop: EventLoop) { self.loop = loop }

    /// Runs `resume` on the loop once `sequence` is durable. Returns false, without keeping
    /// it, when it already is.
    func wait(for sequence: UInt64, storage: StorageEngine, resume: @escaping () -> Void) -> Bool {
        loop.preconditionInEventLoop()
        if storage.durableSequence.load(ordering: .acquiring) >= sequence { return false }
        waiting.append((sequence, resume))
        if registeredFor == 0 || sequence < registeredFor { register(sequence, storage: storage) }
        return true
    }

    private func register(_ sequence: UInt64, storage: StorageEngine) {
        registeredFor = sequence
        let loop = self.loop
        let registered = storage.whenDurable(sequence) {
            loop.execute { self.wake(storage: storage) }
        }
        if !registered { loop.execute { self.wake(storage: storage) } }
    }

    /// Resumes everyone whose sequence is durable and registers for the rest.
    private func wake(storage: StorageEngine) {
        loop.preconditionInEventLoop()
        let durable = storage.durableSequence.load(ordering: .acquiring)
        if registeredFor <= durable { registeredFor = 0 }
        var ready: [() -> Void] = []
        var next: UInt64 = .max
        var kept: [(sequence: UInt64, resume: () -> Void)] = []
        for waiter in waiting {
            if waiter.sequence <= durable {
                ready.append(waiter.resume)
            } else {
                kept.append(waiter)
                next = min(next, waiter.sequence)
            }
        }
        waiting = kept
        if next != .max && (registeredFor == 0 || next < registeredFor) { register(next, storage: storage) }
        for resume in ready { resume() }
    }
}
