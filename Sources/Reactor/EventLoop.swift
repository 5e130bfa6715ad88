import CLibEV

/// One libev loop on the epoll backend, owned by one reactor thread. `owner` is stored as
/// the loop's userdata so that C callbacks, which cannot capture context, find their
/// reactor again with `EventLoop.owner(of:)`.
public final class EventLoop {
    public let raw: OpaquePointer

    public init() throws(SystemError) {
        // EVFLAG_NOENV: the backend is our decision, not LIBEV_FLAGS'.
        guard let loop = ev_loop_new(TW_EVBACKEND_EPOLL | TW_EVFLAG_NOENV) else {
            throw SystemError("ev_loop_new(epoll)")
        }
        raw = loop
    }

    deinit {
        ev_loop_destroy(raw)
    }

    /// Stores an unretained reference to the object that drives this loop.
    public func setOwner(_ owner: AnyObject) {
        ev_set_userdata(raw, Unmanaged.passUnretained(owner).toOpaque())
    }

    /// The object given to `setOwner`, from inside a C callback.
    @inlinable
    public static func owner<T: AnyObject>(of loop: OpaquePointer?, as type: T.Type) -> T {
        Unmanaged<T>.fromOpaque(ev_userdata(loop)!).takeUnretainedValue()
    }

    /// Runs until `stop()` or until no active watcher is left.
    public func run() {
        ev_run(raw, 0)
    }

    public func stop() {
        ev_break(raw, TW_EVBREAK_ALL)
    }

    /// The loop's cached time in seconds (updated once per iteration).
    @inlinable public var now: Double { ev_now(raw) }
}
