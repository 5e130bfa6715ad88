import Glibc
import Ingestion
import Reactor
import TradingStream
import Upstream

/// `GET /metrics` (Prometheus text exposition format 0.0.4). The reactors only ever
/// write their own plain counters; on each scrape this actor, on the edge loop, reads
/// them all (relaxed loads), adds the publisher's (same executor: read synchronously), and
/// renders the text. Nothing on the hot path is shared or contended.
///
/// The text is written here rather than through swift-prometheus because the histograms
/// are kept as per-reactor bucket counts and summed on scrape, and that library's
/// histograms only accept individual observations.
actor MetricsExporter {
    private unowned let context: ServerContext

    nonisolated var unownedExecutor: UnownedSerialExecutor {
        EdgeLoop.edge.asUnownedSerialExecutor()
    }

    init(context: ServerContext) {
        self.context = context
    }

    func render() -> [UInt8] {
        let publisher = context.publisher.assumeIsolated { $0.stats }
        var text = MetricsText()
        let workers = context.workers
        func sum(_ read: (WorkerStats) -> UInt64) -> UInt64 { workers.reduce(0) { $0 + read($1.stats) } }
        func sumInt(_ read: (WorkerStats) -> Int) -> Int { workers.reduce(0) { $0 + read($1.stats) } }

        text.gauge("websocket_connections_active", "Open WebSocket connections.",
                   Double(sumInt { $0.webSocketsOpen.load(ordering: .relaxed) }))
        text.counter("websocket_connections_total", "WebSocket connections opened since start.",
                     sum { $0.webSocketsTotal.load(ordering: .relaxed) })
        text.counter("websocket_messages_sent_total", "Messages sent to WebSocket clients (broadcast deliveries and per-connection messages).",
                     sum { $0.messagesSent.load(ordering: .relaxed) })
        text.counter("websocket_messages_received_total", "Messages received from WebSocket clients.",
                     sum { $0.messagesReceived.load(ordering: .relaxed) })

        // Broadcast latency: publish accepted -> written to the subscribers' sockets, per reactor.
        var buckets = Array(repeating: UInt64(0), count: WorkerStats.latencyBounds.count + 1)
        var latencySum: UInt64 = 0
        var latencyCount: UInt64 = 0
        for w in workers {
            for i in 0..<buckets.count { buckets[i] += w.stats.latencyBuckets[i].load(ordering: .relaxed) }
            latencySum += w.stats.latencySumNanoseconds.load(ordering: .relaxed)
            latencyCount += w.stats.latencyCount.load(ordering: .relaxed)
        }
        text.histogram("websocket_broadcast_latency_seconds",
                       "Time from a publish being accepted to its frame being written to the subscribers' sockets (per reactor).",
                       bounds: WorkerStats.latencyBounds.map { Double($0) / 1e9 }, counts: buckets,
                       sum: Double(latencySum) / 1e9, count: latencyCount)
        text.histogram("websocket_message_size_bytes", "Size of broadcast messages (JSON bytes).",
                       bounds: PublisherStats.sizeBuckets, counts: publisher.sizeCounts,
                       sum: publisher.sizeSum, count: publisher.sizeCount)

        text.counter("websocket_errors_connection_total", "Connections ended by a protocol violation, a socket error or a timeout.",
                     sum { $0.connectionErrors.load(ordering: .relaxed) + $0.handshakeTimeouts.load(ordering: .relaxed) + $0.idleTimeouts.load(ordering: .relaxed) })
        text.counter("websocket_errors_parsing_total", "Client messages that could not be parsed (bad JSON or shape).",
                     sum { $0.parseErrors.load(ordering: .relaxed) })
        text.counter("websocket_reconnections_total", "Clients that reconnected with a resume request (epoch and since).",
                     sum { $0.resumes.load(ordering: .relaxed) })
        text.counter("tickwire_resumes_recovered_total", "Resume requests answered from history (recovered: true).",
                     sum { $0.resumesRecovered.load(ordering: .relaxed) })
        text.counter("tickwire_slow_consumer_conflated_total", "Market data frames dropped for slow consumers because a newer one superseded them.",
                     sum { $0.conflated.load(ordering: .relaxed) })
        text.counter("tickwire_slow_consumer_disconnects_total", "Slow consumers closed with 1013 because events alone exceeded --max-backlog.",
                     sum { $0.slowConsumerDisconnects.load(ordering: .relaxed) })
        text.counter("tickwire_broadcast_failures_total", "Deliveries that failed: a subscriber closed by a write error or as a slow consumer.",
                     sum { $0.broadcastFailures.load(ordering: .relaxed) })
        text.counter("tickwire_log_lines_dropped_total", "Log lines dropped because the log output (stderr) was too slow or failing.",
                     LogLineHandler.droppedLines)
        text.gauge("tickwire_backlog_bytes", "Bytes queued for subscribers whose sockets are full.",
                   Double(sumInt { $0.backlogBytes.load(ordering: .relaxed) }))
        text.gauge("tickwire_history_messages", "Broadcast messages held for resume (per reactor; the largest).",
                   Double(workers.map { $0.stats.historyMessages.load(ordering: .relaxed) }.max() ?? 0))
        // Refusals made on the reactors (authorisation, media type) plus the publisher's own.
        var rejected = publisher.rejected
        for reason in PublishRejection.allCases {
            let n = sum { $0.publishRejections[reason.rawValue].load(ordering: .relaxed) }
            if n > 0 { rejected[reason.label, default: 0] += n }
        }
        let refusedOnReactors = PublishRejection.allCases.reduce(UInt64(0)) { total, reason in
            total + sum { $0.publishRejections[reason.rawValue].load(ordering: .relaxed) }
        }
        text.counter("tickwire_publish_requests_total", "POST /api/publish requests.", publisher.publishRequests + refusedOnReactors)
        text.labeled("tickwire_publish_rejected_total", "counter", "Publish requests refused, by reason.",
                     rejected.sorted { $0.key < $1.key }.map { ("reason=\"\($0.key)\"", Double($0.value)) },
                     emptyLabel: "reason=\"none\"")
        text.labeled("tickwire_messages_published_total", "counter", "Messages published, by type.",
                     Channel.allCases.map { ("type=\"\($0.typeName)\"", Double(publisher.published[Int($0.rawValue)])) })
        text.labeled("tickwire_worker_connections", "gauge", "Open WebSocket connections per reactor.",
                     workers.map { ("worker=\"\($0.index)\"", Double($0.stats.webSocketsOpen.load(ordering: .relaxed))) })
        text.gauge("tickwire_connections_limit", "The --max-connections setting.", Double(context.config.maxConnections))
        text.counter("tickwire_http_requests_total", "HTTP requests served.", sum { $0.httpRequests.load(ordering: .relaxed) })
        text.counter("tickwire_upgrades_rejected_total", "WebSocket upgrades refused (bad handshake, limit, shutdown).",
                     sum { $0.upgradesRejected.load(ordering: .relaxed) })
        text.counter("tickwire_bytes_sent_total", "Bytes written to client sockets.", sum { $0.bytesSent.load(ordering: .relaxed) })
        if context.config.tlsEnabled { tlsMetrics(&text, sum) }
        if context.config.auth != .off { authMetrics(&text, sum) }
        text.counter("tickwire_deflate_sessions_total", "WebSocket connections that negotiated permessage-deflate.",
                     sum { $0.deflateSessions.load(ordering: .relaxed) })
        text.counter("tickwire_deflate_frames_compressed_total", "Broadcast frames compressed (once per frame, not per subscriber).",
                     sum { $0.framesCompressed.load(ordering: .relaxed) })
        text.counter("tickwire_deflate_messages_inflated_total", "Compressed client messages inflated.",
                     sum { $0.messagesInflated.load(ordering: .relaxed) })
        text.counter("tickwire_conflated_updates_total", "Price and candle updates a max_frequency subscriber never got because a newer one for the same key superseded them before its tick (per subscriber).",
                     sum { $0.rateConflated.load(ordering: .relaxed) })
        text.counter("tickwire_max_frequency_releases_total", "Held updates released at a max_frequency tick (once per rate group, shared by its subscribers).",
                     sum { $0.rateReleases.load(ordering: .relaxed) })
        text.counter("tickwire_max_frequency_deliveries_total", "Rate-group updates written to max_frequency subscribers.",
                     sum { $0.rateDeliveries.load(ordering: .relaxed) })
        text.counter("tickwire_bandwidth_limited_total", "Writes held back because a connection reached --max-bandwidth (its prices and candles are then conflated).",
                     sum { $0.bandwidthLimited.load(ordering: .relaxed) })
        text.labeled("tickwire_limit_refusals_total", "counter", "Upgrades and client messages refused by an abuse limit, by limit.",
                     LimitKind.allCases.map { k in ("limit=\"\(k.label)\"", Double(sum { $0.limitRefusals[k.rawValue].load(ordering: .relaxed) })) })
        text.counter("tickwire_flood_closes_total", "Connections closed with 1008 for sending messages far past --max-messages-per-second.",
                     sum { $0.floodCloses.load(ordering: .relaxed) })
        text.labeled("tickwire_build_info", "gauge", "Build information.", [("version=\"\(TickwireVersion.string)\"", 1)])
        text.gauge("tickwire_uptime_seconds", "Seconds since the server started.",
                   Double(monotonicMilliseconds() - context.startedAtMonotonic) / 1000)
        processMetrics(&text)
        if let upstream = context.upstream { upstreamMetrics(&text, upstream.metrics()) }
        return Array(text.output.utf8)
    }

    /// Upstream feeds (`--upstream`): events by type, connections, and each symbol's age.
    private func upstreamMetrics(_ text: inout MetricsText, _ m: UpstreamIngester.Metrics) {
        text.labeled("tickwire_upstream_events_total", "counter",
                     "Upstream messages by type: 24hrTicker, kline, aggTrade (counted only), unknown and malformed (skipped), duplicate (already delivered).",
                     m.events.map { ("type=\"\($0.type)\"", Double($0.count)) })
        text.gauge("tickwire_upstream_connections_up", "Upstream URLs whose connection is open.", Double(m.connectionsUp))
        text.counter("tickwire_upstream_reconnects_total", "Upstream connections lost and scheduled to reconnect (with backoff).", m.reconnects)
        text.counter("tickwire_upstream_rotations_total", "Upstream connections replaced ahead of their end by a successor, without a gap.", m.rotations)
        text.counter("tickwire_upstream_pongs_total", "Pongs sent in answer to upstream pings.", m.pongs)
        text.counter("tickwire_upstream_stale_notices_total", "FEED_STALE and FEED_RECOVERED notices broadcast.", m.staleNotices)
        text.labeled("tickwire_upstream_symbol_age_seconds", "gauge", "Seconds since the symbol's last upstream event.",
                     m.symbolAges.map { ("symbol=\"\($0.symbol)\"", $0.seconds) }, emptyLabel: nil)
        text.labeled("tickwire_upstream_symbol_stale", "gauge", "1 while the symbol is stale (no event for --upstream-stale), else 0.",
                     m.symbolAges.map { ("symbol=\"\($0.symbol)\"", $0.stale ? 1 : 0) })
    }

    /// Tokens: results of the checks, refreshes, expiry closes, forbidden subscriptions.
    private func authMetrics(_ text: inout MetricsText, _ sum: ((WorkerStats) -> UInt64) -> UInt64) {
        text.labeled("tickwire_auth_total", "counter", "Token checks on WebSocket upgrades and snapshot requests, by result.",
                     AuthResult.allCases.map { r in ("result=\"\(r.label)\"", Double(sum { $0.authResults[r.rawValue].load(ordering: .relaxed) })) })
        text.counter("tickwire_auth_cache_hits_total", "Token checks answered by a reactor's cache of tokens it verified before (--jwt-cache-size): no parse, no signature; claims checked again.",
                     Double(sum { $0.tokenCacheHits.load(ordering: .relaxed) }))
        text.labeled("tickwire_token_refreshes_total", "counter", "In-band Refresh messages, by result.", [
            ("result=\"accepted\"", Double(sum { $0.tokenRefreshes.load(ordering: .relaxed) })),
            ("result=\"refused\"", Double(sum { $0.tokenRefreshesRefused.load(ordering: .relaxed) })),
        ])
        text.counter("tickwire_token_expiry_closes_total", "Connections closed with 4001 because their token expired without a refresh.",
                     sum { $0.tokenExpiryCloses.load(ordering: .relaxed) })
        text.counter("tickwire_subscriptions_forbidden_total", "Subscribe requests refused (FORBIDDEN) for going beyond the token's channels or symbols.",
                     sum { $0.forbiddenSubscriptions.load(ordering: .relaxed) })
    }

    /// Native TLS: handshakes by version, failures by kind, and the certificate's expiry
    /// (alert on `tickwire_tls_certificate_expiry_timestamp_seconds - time() < 14 * 86400`).
    private func tlsMetrics(_ text: inout MetricsText, _ sum: ((WorkerStats) -> UInt64) -> UInt64) {
        text.labeled("tickwire_tls_handshakes_total", "counter", "TLS handshakes completed, by protocol version.", [
            ("version=\"TLSv1.2\"", Double(sum { $0.tlsHandshakes[0].load(ordering: .relaxed) })),
            ("version=\"TLSv1.3\"", Double(sum { $0.tlsHandshakes[1].load(ordering: .relaxed) })),
        ])
        text.counter("tickwire_tls_handshake_failures_total", "TLS handshakes refused or broken off (old version, no shared cipher or ALPN, garbage).",
                     sum { $0.tlsHandshakeFailures.load(ordering: .relaxed) })
        text.counter("tickwire_tls_record_failures_total", "Established TLS connections closed for a bad record or an alert.",
                     sum { $0.tlsRecordFailures.load(ordering: .relaxed) })
        text.counter("tickwire_tls_plaintext_requests_total", "Plain-HTTP connections on the TLS port, answered 400.",
                     sum { $0.tlsPlaintextRequests.load(ordering: .relaxed) })
        text.counter("tickwire_tls_reloads_total", "Certificate reloads (SIGHUP) that took effect.", context.tlsReloads.load(ordering: .relaxed))
        text.counter("tickwire_tls_reload_failures_total", "Certificate reloads refused for unreadable or mismatched files (the old certificate stays).",
                     context.tlsReloadFailures.load(ordering: .relaxed))
        text.gauge("tickwire_tls_certificate_expiry_timestamp_seconds", "The serving certificate's notAfter, in seconds since the epoch.",
                   Double(context.tlsCertificateExpiry.load(ordering: .relaxed)))
    }

    /// The standard process_* metrics, from /proc/self.
    private func processMetrics(_ text: inout MetricsText) {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        let cpu = Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
            + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
        text.counter("process_cpu_seconds_total", "User and system CPU time.", cpu)
        if let status = readFile("/proc/self/status") {
            for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
                if let kb = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) {
                    text.gauge("process_resident_memory_bytes", "Resident memory.", kb * 1024)
                }
            }
        }
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        text.gauge("process_max_fds", "Open file limit.", Double(limit.rlim_cur))
        text.gauge("process_start_time_seconds", "Start time since the epoch.", context.startedAtWallSeconds)
        if let cluster = context.cluster {
            text.gauge("tickwire_cluster_link_up", "1 while both Redis links are up and the history is loaded, else 0.",
                       cluster.linkUp.load(ordering: .relaxed) ? 1 : 0)
            text.gauge("tickwire_cluster_head_seq", "The last cluster seq this node applied.", Double(cluster.head.load(ordering: .relaxed)))
            text.counter("tickwire_cluster_gap_fills_total", "Gaps in seq seen on Pub/Sub and filled from the stream.",
                         cluster.gapFills.load(ordering: .relaxed))
            text.counter("tickwire_cluster_lost_total", "Messages a gap fill could not read (trimmed from the stream first).",
                         cluster.lost.load(ordering: .relaxed))
            text.counter("tickwire_cluster_epoch_changes_total", "Epochs replaced because Redis lost the stream.",
                         cluster.epochChanges.load(ordering: .relaxed))
            var rttCounts: [UInt64] = []
            for i in 0...ClusterIngest.publishRoundTripBounds.count { rttCounts.append(cluster.publishRoundTripBuckets[i].load(ordering: .relaxed)) }
            text.histogram("tickwire_cluster_publish_round_trip_seconds",
                           "Send-to-reply time of acknowledged publish script calls to Redis (one call carries a batch of messages).",
                           bounds: ClusterIngest.publishRoundTripBounds.map { Double($0) / 1e9 }, counts: rttCounts,
                           sum: Double(cluster.publishRoundTripNanoseconds.load(ordering: .relaxed)) / 1e9,
                           count: cluster.publishCalls.load(ordering: .relaxed))
            text.labeled("tickwire_cluster_publish_refused_total", "counter",
                         "Publish requests answered 503 because Redis could not take them: cluster_down (never sent), cluster_unknown (sent, no reply).",
                         [("reason=\"cluster_down\"", Double(cluster.refusedLinkDown.load(ordering: .relaxed))),
                          ("reason=\"cluster_unknown\"", Double(cluster.refusedUnknown.load(ordering: .relaxed)))])
            text.labeled("tickwire_cluster_redis_link_up", "gauge", "1 while this Redis link is up, by link (command: scripts; pubsub: the feed).",
                         [("link=\"command\"", cluster.commandLinkUp.load(ordering: .relaxed) ? 1 : 0),
                          ("link=\"pubsub\"", cluster.pubsubLinkUp.load(ordering: .relaxed) ? 1 : 0)])
            text.counter("tickwire_cluster_link_changes_total", "Redis link state changes (up or down, either link); each is logged.",
                         cluster.linkChanges.load(ordering: .relaxed))
            let length = cluster.streamLength.load(ordering: .relaxed)
            if length >= 0 {
                text.gauge("tickwire_cluster_stream_length", "Entries in the cluster's Redis stream (XLEN, sampled every second).", Double(length))
            }
            text.labeled("tickwire_cluster_leader", "gauge", "1 while this node holds the role's leader lease in Redis, by role.",
                         context.leases.map { ("role=\"\($0.role)\"", $0.lease.isLeader ? 1 : 0) }, emptyLabel: "role=\"none\"")
            text.labeled("tickwire_cluster_leader_acquired_total", "counter", "Times this node acquired the role's leader lease, by role.",
                         context.leases.map { ("role=\"\($0.role)\"", Double($0.lease.acquisitions)) }, emptyLabel: "role=\"none\"")
        }
    }

    private func readFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes = [UInt8](repeating: 0, count: 8192)
        let n = read(fd, &bytes, bytes.count)
        return n > 0 ? String(decoding: bytes[0..<n], as: UTF8.self) : nil
    }
}

/// Builds the text exposition format: `# HELP`, `# TYPE`, then samples.
struct MetricsText {
    private(set) var output = ""

    init() { output.reserveCapacity(8192) }

    private static func format(_ v: Double) -> String {
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded() && abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }

    mutating func header(_ name: String, _ type: String, _ help: String) {
        output += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    mutating func counter(_ name: String, _ help: String, _ value: UInt64) {
        counter(name, help, Double(value))
    }

    mutating func counter(_ name: String, _ help: String, _ value: Double) {
        header(name, "counter", help)
        output += "\(name) \(Self.format(value))\n"
    }

    mutating func gauge(_ name: String, _ help: String, _ value: Double) {
        header(name, "gauge", help)
        output += "\(name) \(Self.format(value))\n"
    }

    /// Samples with labels; `emptyLabel` gives a zero sample when there are none yet,
    /// so the series exists from the first scrape (alerts and rate() need that).
    mutating func labeled(_ name: String, _ type: String, _ help: String, _ samples: [(String, Double)], emptyLabel: String? = nil) {
        header(name, type, help)
        var samples = samples
        if samples.isEmpty, let emptyLabel { samples = [(emptyLabel, 0)] }
        for (labels, value) in samples { output += "\(name){\(labels)} \(Self.format(value))\n" }
    }

    /// `counts` are per bucket (the last is +Inf), made cumulative here.
    mutating func histogram(_ name: String, _ help: String, bounds: [Double], counts: [UInt64], sum: Double, count: UInt64) {
        header(name, "histogram", help)
        var cumulative: UInt64 = 0
        for (i, bound) in bounds.enumerated() {
            cumulative += counts[i]
            output += "\(name)_bucket{le=\"\(Self.format(bound))\"} \(cumulative)\n"
        }
        cumulative += counts[bounds.count]
        output += "\(name)_bucket{le=\"+Inf\"} \(cumulative)\n"
        output += "\(name)_sum \(Self.format(sum))\n\(name)_count \(count)\n"
    }
}
