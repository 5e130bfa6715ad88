/// The Lua scripts behind `ClusterStream`. Redis runs a script atomically, so the order
/// in which publishes take their `seq` is the order every node receives them in.
///
/// Data model (one stream per cluster; keys share a `{hash tag}` so a Redis Cluster keeps
/// them on one shard):
/// - meta hash `{p}:meta`: `epoch` (text, 16 hex digits) and `seq` (the last seq given).
/// - stream `{p}:stream`: one entry per message, ID `<seq>-0`, field `d` = the payload,
///   trimmed with `MAXLEN ~ history` (approximate: Redis trims whole nodes, so it keeps at
///   least `history` entries, at most about 100 more, at a fraction of exact trimming's cost).
///
/// The history is trusted only while the stream's newest entry is the meta hash's `seq`:
/// a missing epoch (FLUSHALL, eviction, a Redis without persistence restarted) or a
/// stream that disagrees with it starts a new epoch from the caller's candidate, with
/// `seq` from 0 and an empty stream, so no client resumes across a loss.
enum StreamScripts {
    /// Shared by both scripts: `epoch, seq = current(candidate)`.
    static let current = """
        local function current(candidate)
          local meta = redis.call('HMGET', KEYS[2], 'epoch', 'seq')
          local epoch, seq = meta[1], tonumber(meta[2]) or 0
          local trusted = epoch ~= false
          if trusted and seq > 0 then
            local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
            trusted = newest ~= nil and tonumber(string.match(newest[1], '^%d+')) == seq
          end
          if not trusted then
            epoch, seq = candidate, 0
            redis.call('DEL', KEYS[1])
            redis.call('HSET', KEYS[2], 'epoch', epoch, 'seq', 0)
          end
          return epoch, seq
        end

        """

    /// KEYS: stream, meta. ARGV: history, epoch candidate, channel, payload...
    /// Appends each payload with the next seq, then PUBLISHes one `ClusterFrame` for the
    /// whole batch. Returns {epoch, last seq}.
    static let publish = current + """
        local epoch, seq = current(ARGV[2])
        local frame = {epoch, ' ', string.format('%d', seq + 1), ' ', #ARGV - 3, '\\n'}
        for i = 4, #ARGV do
          seq = seq + 1
          redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], string.format('%d-0', seq), 'd', ARGV[i])
          frame[#frame + 1] = #ARGV[i]
          frame[#frame + 1] = '\\n'
          frame[#frame + 1] = ARGV[i]
        end
        redis.call('HSET', KEYS[2], 'seq', seq)
        redis.call('PUBLISH', ARGV[3], table.concat(frame))
        return {epoch, seq}
        """

    /// KEYS: stream, meta. ARGV: epoch candidate, from seq, count (0: the head only).
    /// Returns {epoch, head seq, {{id, {'d', payload}}...}}: the entries and the head are
    /// read at one instant, so a caller knows whether the range reaches the head.
    static let read = current + """
        local epoch, seq = current(ARGV[1])
        local entries = {}
        if tonumber(ARGV[3]) > 0 and seq > 0 then
          entries = redis.call('XRANGE', KEYS[1], ARGV[2], '+', 'COUNT', ARGV[3])
        end
        return {epoch, seq, entries}
        """
}

/// A script run by SHA (`EVALSHA`), loaded on every (re)connect of the link, and sent in
/// full (`EVAL`, which caches it again) if Redis answers NOSCRIPT (a `SCRIPT FLUSH` while
/// connected).
final class RedisScript: @unchecked Sendable {
    // @unchecked: `sha` is written and read on the link's loop thread only.
    let source: String
    var sha: String?

    init(_ source: String) { self.source = source }

    /// The link preparation that loads it.
    func load(on link: RedisLink, done: @escaping (Result<Void, RedisFailure>) -> Void) {
        link.transmit(RedisCommand("SCRIPT", "LOAD", source)) { [self] result in
            switch result {
            case .success(let reply):
                guard let sha = reply.string else { done(.failure(.unexpectedReply("SCRIPT LOAD: \(reply)"))); return }
                self.sha = sha
                done(.success(()))
            case .failure(let f): done(.failure(f))
            }
        }
    }

    /// Runs the script with `keys` and `arguments`.
    func run(on link: RedisLink, keys: [String], arguments: [[UInt8]], then: @escaping (Result<RedisReply, RedisFailure>) -> Void) {
        func command(_ verb: String, _ body: String) -> RedisCommand {
            var c = RedisCommand(verb, body, String(keys.count))
            for k in keys { c.append(k) }
            for a in arguments { c.append(bytes: a) }
            return c
        }
        guard let sha else {
            link.send(command("EVAL", source), then: then)
            return
        }
        link.send(command("EVALSHA", sha)) { [self] result in
            if case .failure(.server(let message)) = result, message.hasPrefix("NOSCRIPT") {
                link.send(command("EVAL", source), then: then)
            } else {
                then(result)
            }
        }
    }
}
