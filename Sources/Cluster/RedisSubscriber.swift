import CHiredis
import Reactor

/// A Pub/Sub connection of its own (a subscribed connection can run no other command):
/// subscribes on every (re)connect and reports up only once Redis confirmed every channel,
/// so a caller that reads the stream on `up` misses nothing between the two.
/// Messages reach `onMessage` on the loop's thread, in Redis' order.
///
/// Pub/Sub drops what is published while a subscriber is disconnected: the cluster
/// detects that as a gap in `seq` and fills it from the stream.
public final class RedisSubscriber: @unchecked Sendable {
    // @unchecked: as RedisLink, whose thread rules it follows.
    public let link: RedisLink
    public let channels: [String]

    public init(
        endpoint: RedisEndpoint, settings: RedisLinkSettings = RedisLinkSettings(), on edge: EdgeLoop,
        channels: [String], onMessage: @escaping (_ channel: String, _ payload: [UInt8]) -> Void
    ) {
        precondition(!channels.isEmpty, "a subscriber needs a channel")
        link = RedisLink(endpoint: endpoint, settings: settings, on: edge)
        self.channels = channels
        link.onMessage = onMessage
        link.addPreparation { [channels] link, done in link.subscribe(channels, done: done) }
    }

    /// Set before `start()`.
    public var onStateChange: ((RedisLink.State) -> Void)? {
        get { link.onStateChange }
        set { link.onStateChange = newValue }
    }

    public func start() { link.start() }
    public func close() { link.close() }
    public var state: RedisLink.State { link.state }
}

// The Pub/Sub side of a link: SUBSCRIBE as a preparation, then messages.
extension RedisLink {
    /// Sends SUBSCRIBE; `done` runs once every channel is confirmed. Messages go to `onMessage`.
    func subscribe(_ channels: [String], done: @escaping (Result<Void, RedisFailure>) -> Void) {
        guard let ac = context else {
            done(.failure(.linkDown("not connected")))
            return
        }
        var command = RedisCommand("SUBSCRIBE")
        for c in channels { command.append(c) }
        awaitingConfirmation = Set(channels)
        confirmed = done
        let rc = Self.formatted(command) { bytes, count in
            redisAsyncFormattedCommand(ac, { ac, reply, _ in
                let me = Unmanaged<RedisLink>.fromOpaque(ac!.pointee.data).takeUnretainedValue()
                me.published(reply?.assumingMemoryBound(to: redisReply.self))
            }, nil, bytes, count)
        }
        if rc != TW_REDIS_OK {
            confirmed = nil
            done(.failure(.linkDown("connection closing")))
        }
    }

    /// A Pub/Sub event: a message, or a subscription's confirmation. (A null reply is the
    /// connection ending; `disconnected` or `drop` handles that.)
    func published(_ reply: UnsafeMutablePointer<redisReply>?) {
        guard let reply, reply.pointee.type == TW_REDIS_REPLY_ARRAY, reply.pointee.elements == 3 else { return }
        let parts = reply.pointee.element!
        func bytes(_ i: Int) -> UnsafeRawBufferPointer {
            let e = parts[i]!.pointee
            return UnsafeRawBufferPointer(start: e.str, count: e.type == TW_REDIS_REPLY_STRING ? e.len : 0)
        }
        let kind = bytes(0)
        if kind.elementsEqual("message".utf8) {
            onMessage?(String(decoding: bytes(1), as: UTF8.self), Array(bytes(2)))
        } else if kind.elementsEqual("subscribe".utf8) {
            awaitingConfirmation.remove(String(decoding: bytes(1), as: UTF8.self))
            if awaitingConfirmation.isEmpty, let done = confirmed {
                confirmed = nil
                done(.success(()))
            }
        }
    }
}
