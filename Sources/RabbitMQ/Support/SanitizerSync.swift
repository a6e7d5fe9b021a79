import Glibc

/// Happens-before edges that ThreadSanitizer cannot see by itself, declared to it when the
/// process runs under it (`swift test --sanitize=thread`); without it, each call is a load
/// and a branch.
///
/// Why: the Swift runtime tells ThreadSanitizer that resuming a continuation happens before
/// the task runs again, but only when the task had already suspended. When the resume comes
/// first (an I/O thread answering before the task reached its `await`), the task goes on
/// without that edge, and everything the resuming thread wrote before the resume (a reply,
/// a batch of deliveries, a returned message) is reported as a data race although the
/// continuation's own atomics order it. So the side that resumes calls ``release(_:)`` on
/// an object both sides know, and the side that awaited calls ``acquire(_:)`` on it after
/// the `await`: the edge is explicit whichever came first.
enum SanitizerSync {
    private typealias Hook = @convention(c) (UnsafeMutableRawPointer?) -> Void

    private static let hooks: (acquire: Hook, release: Hook)? = {
        // RTLD_DEFAULT: the ThreadSanitizer runtime is linked into the executable when present.
        guard let acquire = dlsym(nil, "__tsan_acquire"), let release = dlsym(nil, "__tsan_release") else { return nil }
        return (unsafeBitCast(acquire, to: Hook.self), unsafeBitCast(release, to: Hook.self))
    }()

    /// Everything this thread did so far happens before what follows an ``acquire(_:)`` of
    /// the same object.
    @inline(__always)
    static func release(_ object: AnyObject) {
        if let hooks { hooks.release(Unmanaged.passUnretained(object).toOpaque()) }
    }

    /// See ``release(_:)``.
    @inline(__always)
    static func acquire(_ object: AnyObject) {
        if let hooks { hooks.acquire(Unmanaged.passUnretained(object).toOpaque()) }
    }
}
