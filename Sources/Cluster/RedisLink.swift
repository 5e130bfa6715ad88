import CHiredis
import CLibEV
import Reactor

/// One async hiredis connection on an `EdgeLoop` (never a reactor): connect, AUTH, SELECT,
/// the link's preparations, then commands with callbacks, pipelined in the order sent.
///
/// Everything here runs on the loop's thread (`send`, the callbacks, the state reports);
/// other threads hop there with `edge.onLoop`. A started link keeps itself alive until
/// `close()`.
///
/// Failure policy: a command sent while the link is not up fails at once with `.linkDown`
/// (callers refuse, e.g. a 503, rather than queue without bound). A reply overdue by
/// `commandTimeout` drops the whole connection: replies are ordered, so every later one
/// is stuck too. A dropped link reconnects with `ReconnectBackoff`, forever, until closed.
public final class RedisLink: @unchecked Sendable {
    // @unchecked: all mutable state is touched only on `edge`'s thread (checked by
    // `precondition(edge.isOnLoopThread)` at the public entry points).

    public enum State: Sendable, Equatable {
        case up
        case down(reason: String)
        case closed
    }

    /// A step run on every (re)connect after AUTH/SELECT and before the link reports up.
    public typealias Preparation = (RedisLink, _ done: @escaping (Result<Void, RedisFailure>) -> Void) -> Void

    public let endpoint: RedisEndpoint
    public let settings: RedisLinkSettings
    public let edge: EdgeLoop
    public private(set) var state: State = .down(reason: "not started")
    /// Called on every change between up, down and closed (not on each failed retry).
    public var onStateChange: ((State) -> Void)?
    /// Every (re)connect that reached up, for metrics.
    public private(set) var connects = 0

    private(set) var context: UnsafeMutablePointer<redisAsyncContext>?
    /// Bumped per connection, so callbacks of a connection already given up are ignored.
    private var generation = 0
    private var handshaking = false
    /// What the replies that hiredis fails with no reply get, once we dropped a connection.
    private var dropFailure: RedisFailure = .disconnected("connection dropped")
    private var pending = PendingReplies()
    private var preparations: [Preparation] = []
    private var backoff: ReconnectBackoff
    private var random = SystemRandomNumberGenerator()
    private var lastReported: State?
    private var retained: Unmanaged<RedisLink>?
    private var closed = false

    private let connectTimer = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
    private let reconnectTimer = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)
    private let replyTimer = UnsafeMutablePointer<ev_timer>.allocate(capacity: 1)

    // Pub/Sub (used by `RedisSubscriber`).
    var onMessage: ((String, [UInt8]) -> Void)?
    var awaitingConfirmation: Set<String> = []
    var confirmed: ((Result<Void, RedisFailure>) -> Void)?

    public init(endpoint: RedisEndpoint, settings: RedisLinkSettings = RedisLinkSettings(), on edge: EdgeLoop) {
        self.endpoint = endpoint
        self.settings = settings
        self.edge = edge
        backoff = ReconnectBackoff(initial: settings.reconnectInitialDelay, maximum: settings.reconnectMaxDelay)
        let me = Unmanaged.passUnretained(self).toOpaque()
        tw_ev_timer_init(connectTimer, { loop, w, _ in
            Unmanaged<RedisLink>.fromOpaque(w!.pointee.data).takeUnretainedValue().connectTimedOut()
        }, 0, 0)
        tw_ev_timer_init(reconnectTimer, { loop, w, _ in
            let me = Unmanaged<RedisLink>.fromOpaque(w!.pointee.data).takeUnretainedValue()
            if me.closed { me.releaseSelf() } else { me.connect() }
        }, 0, 0)
        tw_ev_timer_init(replyTimer, { loop, w, _ in
            Unmanaged<RedisLink>.fromOpaque(w!.pointee.data).takeUnretainedValue().checkReplyDeadline()
        }, 0, 0)
        connectTimer.pointee.data = me
        reconnectTimer.pointee.data = me
        replyTimer.pointee.data = me
    }

    deinit {
        connectTimer.deallocate()
        reconnectTimer.deallocate()
        replyTimer.deallocate()
    }

    /// Adds a step to every (re)connect (script loads, SUBSCRIBE). Before `start()` only.
    public func addPreparation(_ step: @escaping Preparation) {
        preparations.append(step)
    }

    /// Any thread: starts connecting. State changes follow on `onStateChange`.
    public func start() {
        let box = UncheckedLink(self)
        edge.onLoop {
            let me = box.link
            guard me.retained == nil, !me.closed else { return }
            me.retained = Unmanaged.passRetained(me)
            me.connect()
        }
    }

    /// Any thread: drops the connection (pending commands fail) and stops reconnecting.
    public func close() {
        let box = UncheckedLink(self)
        edge.onLoop {
            let me = box.link
            guard !me.closed else { return }
            me.closed = true
            ev_timer_stop(me.edge.rawLoop, me.reconnectTimer)
            // Sent and unanswered: their outcome is unknown, unlike a send refused when down.
            me.drop(.disconnected("link closed"))
            me.stopTimers()
            me.report(.closed)
            // Let go of ourselves on the next loop pass, not now: close() may run inside a
            // hiredis callback, and hiredis still calls the dropped connection's pending
            // callbacks (which find this link) after that callback returns.
            tw_ev_timer_set(me.reconnectTimer, 0, 0)
            ev_timer_start(me.edge.rawLoop, me.reconnectTimer)
        }
    }

    private func releaseSelf() {
        retained?.release()
        retained = nil
    }

    /// Loop thread: sends `command`; `then` gets its reply (error replies as `.server`).
    public func send(_ command: RedisCommand, then: @escaping (Result<RedisReply, RedisFailure>) -> Void) {
        precondition(edge.isOnLoopThread, "RedisLink.send off the \(edge.name) thread")
        guard case .up = state, !handshaking, context != nil else {
            if case .down(let why) = state { then(.failure(.linkDown(why))) } else { then(.failure(.linkDown("closed"))) }
            return
        }
        transmit(command, then)
    }

    /// Loop thread: drops the connection now and reconnects with backoff (e.g. a Pub/Sub
    /// link whose peer command link saw Redis stall: a subscriber sends nothing to time out).
    public func reconnect(reason: String) {
        precondition(edge.isOnLoopThread)
        guard context != nil else { return }
        drop(.disconnected(reason))
        lost(reason)
    }

    public var isUp: Bool { if case .up = state { true } else { false } }
    /// Commands sent and not yet answered.
    public var inFlight: Int { pending.count }

    // MARK: - Connection

    private func connect() {
        guard !closed, context == nil else { return }
        generation &+= 1
        dropFailure = .disconnected("connection dropped")
        guard let ac = redisAsyncConnect(endpoint.host, Int32(endpoint.port)) else {
            lost("redisAsyncConnect: out of memory")
            return
        }
        if ac.pointee.err != 0 {
            let why = Self.errorText(ac)
            redisAsyncFree(ac)
            lost("connect to \(endpoint.host):\(endpoint.port): \(why)")
            return
        }
        ac.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        // SO_KEEPALIVE: the Pub/Sub link sends nothing, so only TCP can tell it its peer died.
        _ = redisEnableKeepAlive(&ac.pointee.c)
        _ = tw_redis_libev_attach(UnsafeMutableRawPointer(edge.rawLoop), ac)
        _ = redisAsyncSetConnectCallback(ac) { ac, status in
            let me = Unmanaged<RedisLink>.fromOpaque(ac!.pointee.data).takeUnretainedValue()
            me.connected(UnsafeMutableRawPointer(mutating: ac!), status: status)
        }
        _ = redisAsyncSetDisconnectCallback(ac) { ac, _ in
            let me = Unmanaged<RedisLink>.fromOpaque(ac!.pointee.data).takeUnretainedValue()
            me.disconnected(UnsafeMutableRawPointer(mutating: ac!))
        }
        context = ac
        handshaking = true
        tw_ev_timer_set(connectTimer, settings.connectTimeout, 0)
        ev_timer_start(edge.rawLoop, connectTimer)
    }

    private func connected(_ ac: UnsafeMutableRawPointer, status: Int32) {
        guard let context, UnsafeMutableRawPointer(context) == ac else { return }
        if status != TW_REDIS_OK {
            // hiredis frees a context whose connect failed once this callback returns.
            let why = Self.errorText(context)
            self.context = nil
            lost("connect to \(endpoint.host):\(endpoint.port): \(why)")
            return
        }
        var steps: [Preparation] = []
        if let password = endpoint.password {
            steps.append { link, done in
                var auth = RedisCommand("AUTH")
                if let user = link.endpoint.user { auth.append(user) }
                auth.append(password)
                link.transmit(auth) { done($0.map { _ in () }) }
            }
        }
        if endpoint.database != 0 {
            steps.append { link, done in
                link.transmit(RedisCommand("SELECT", String(link.endpoint.database))) { done($0.map { _ in () }) }
            }
        }
        // Up means Redis answered: a TCP connect alone also succeeds into the backlog of a
        // stopped (SIGSTOP, swapped out) Redis.
        steps.append { link, done in link.transmit(RedisCommand("PING")) { done($0.map { _ in () }) } }
        runHandshake(steps + preparations, at: 0, generation: generation)
    }

    private func runHandshake(_ steps: [Preparation], at index: Int, generation: Int) {
        guard index < steps.count else {
            handshaking = false
            ev_timer_stop(edge.rawLoop, connectTimer)
            backoff.reset()
            connects += 1
            report(.up)
            return
        }
        steps[index](self) { [self] result in
            // A connection given up meanwhile fails its steps too: that is no news.
            guard generation == self.generation, context != nil else { return }
            switch result {
            case .success: runHandshake(steps, at: index + 1, generation: generation)
            case .failure(let f):
                drop(.disconnected("handshake failed"))
                lost("handshake: \(f)")
            }
        }
    }

    private func connectTimedOut() {
        guard context != nil, handshaking else { return }
        drop(.timeout)
        lost("connect to \(endpoint.host):\(endpoint.port) timed out after \(settings.connectTimeout) s")
    }

    /// hiredis saw the connection end (EOF, I/O error); its pending replies already failed.
    private func disconnected(_ ac: UnsafeMutableRawPointer) {
        guard let context, UnsafeMutableRawPointer(context) == ac else { return }  // one we dropped
        let why = Self.errorText(context)
        self.context = nil
        lost("connection lost: \(why)")
    }

    /// Frees the connection; hiredis fails each pending reply (with `failure`), now or, when
    /// called from inside a hiredis callback, as soon as that callback returns.
    private func drop(_ failure: RedisFailure) {
        guard let ac = context else { return }
        context = nil
        dropFailure = failure
        redisAsyncFree(ac)
    }

    /// The connection is gone (or never came): report, and retry after a backoff delay.
    private func lost(_ reason: String) {
        handshaking = false
        stopTimers()
        confirmed = nil
        report(.down(reason: reason))
        guard !closed else { return }
        let delay = backoff.nextDelay(random: Double.random(in: 0...1, using: &random))
        ev_timer_stop(edge.rawLoop, reconnectTimer)
        tw_ev_timer_set(reconnectTimer, delay, 0)
        ev_timer_start(edge.rawLoop, reconnectTimer)
    }

    private func stopTimers() {
        ev_timer_stop(edge.rawLoop, connectTimer)
        ev_timer_stop(edge.rawLoop, replyTimer)
    }

    private func report(_ new: State) {
        state = new
        let changed: Bool
        switch (lastReported, new) {
        case (.up?, .up), (.down?, .down), (.closed?, .closed): changed = false
        default: changed = true
        }
        guard changed else { return }
        lastReported = new
        onStateChange?(new)
    }

    private static func errorText(_ ac: UnsafePointer<redisAsyncContext>) -> String {
        withUnsafeBytes(of: ac.pointee.c.errstr) { raw in
            let bytes = raw.prefix { $0 != 0 }
            return bytes.isEmpty ? "closed by the server" : String(decoding: bytes, as: UTF8.self)
        }
    }

    private static func errorText(_ ac: UnsafeMutablePointer<redisAsyncContext>) -> String {
        errorText(UnsafePointer(ac))
    }

    // MARK: - Commands

    /// Sends on the current connection whatever the state (the handshake's own commands).
    func transmit(_ command: RedisCommand, _ then: @escaping (Result<RedisReply, RedisFailure>) -> Void) {
        guard let ac = context else {
            then(.failure(.linkDown("not connected")))
            return
        }
        let rc = Self.formatted(command) { bytes, count in
            redisAsyncFormattedCommand(ac, { ac, reply, _ in
                let me = Unmanaged<RedisLink>.fromOpaque(ac!.pointee.data).takeUnretainedValue()
                me.replied(reply?.assumingMemoryBound(to: redisReply.self), on: ac!)
            }, nil, bytes, count)
        }
        guard rc == TW_REDIS_OK else {
            then(.failure(.linkDown("connection closing")))
            return
        }
        pending.append(PendingReply(deadline: ev_now(edge.rawLoop) + settings.commandTimeout, callback: then))
        // The handshake's replies are under the connect timeout instead.
        if !handshaking && tw_ev_is_active(replyTimer) == 0 {
            tw_ev_timer_set(replyTimer, settings.commandTimeout, 0)
            ev_timer_start(edge.rawLoop, replyTimer)
        }
    }

    /// The command's RESP bytes, NUL-terminated past `count`: hiredis scans a formatted
    /// command with `strchr` to spot (P)SUBSCRIBE, which would otherwise run off the end.
    static func formatted(_ command: RedisCommand, _ body: (UnsafePointer<CChar>, Int) -> Int32) -> Int32 {
        var bytes = command.encoded()
        bytes.append(0)
        return bytes.withUnsafeBytes { raw in body(raw.baseAddress!.assumingMemoryBound(to: CChar.self), raw.count - 1) }
    }

    private func replied(_ reply: UnsafeMutablePointer<redisReply>?, on ac: UnsafeMutablePointer<redisAsyncContext>) {
        guard let entry = pending.popFirst() else { return }
        let result: Result<RedisReply, RedisFailure>
        if let reply {
            let decoded = RedisReply(UnsafePointer(reply))
            if case .error(let message) = decoded { result = .failure(.server(message)) } else { result = .success(decoded) }
        } else if context == ac {
            result = .failure(.disconnected(Self.errorText(ac)))
        } else {
            result = .failure(dropFailure)
        }
        entry.callback(result)
    }

    /// One timer for all replies: they come in order, so the oldest is the next deadline.
    private func checkReplyDeadline() {
        guard context != nil, !handshaking, let oldest = pending.first else { return }
        let now = ev_now(edge.rawLoop)
        if oldest.deadline <= now {
            drop(.timeout)
            lost("no reply within \(settings.commandTimeout) s")
        } else {
            tw_ev_timer_set(replyTimer, oldest.deadline - now, 0)
            ev_timer_start(edge.rawLoop, replyTimer)
        }
    }
}

struct PendingReply {
    let deadline: Double
    let callback: (Result<RedisReply, RedisFailure>) -> Void
}

/// The callbacks of the commands in flight, oldest first (a FIFO that reuses its storage).
struct PendingReplies {
    private var items: [PendingReply] = []
    private var head = 0

    var count: Int { items.count - head }
    var first: PendingReply? { head < items.count ? items[head] : nil }

    mutating func append(_ item: PendingReply) { items.append(item) }

    mutating func popFirst() -> PendingReply? {
        guard head < items.count else { return nil }
        let item = items[head]
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 1024 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return item
    }
}

/// Carries the link into the job that runs on its own loop.
struct UncheckedLink: @unchecked Sendable {
    let link: RedisLink
    init(_ link: RedisLink) { self.link = link }
}
