import Testing
@testable import WireProtocol

typealias Lifecycle = ConnectionLifecycle
typealias Actions = ConnectionLifecycle.Actions

/// Every event the reactor can report, with a name for failure messages.
enum LifecycleEvent: CaseIterable {
    case answeredKeepAlive, answeredClose, handedOff, replyKeepAlive, replyClose, upgraded
    case requestDeadline, idleDeadline, closingDeadline, pingDue
    case shutdownIdle, shutdownPending, slowConsumer, policy
    case peerClose, peerCloseNoCode, protocolError
    case drained, eofPending, eofNothingPending, ioFailed

    func apply(_ l: inout Lifecycle) -> Lifecycle.Transition {
        switch self {
        case .answeredKeepAlive: return l.requestAnswered(keepAlive: true)
        case .answeredClose: return l.requestAnswered(keepAlive: false)
        case .handedOff: return l.handedOff()
        case .replyKeepAlive: return l.replyArrived(keepAlive: true)
        case .replyClose: return l.replyArrived(keepAlive: false)
        case .upgraded: return l.upgraded()
        case .requestDeadline: return l.requestDeadlineExpired()
        case .idleDeadline: return l.idleDeadlineExpired()
        case .closingDeadline: return l.closingDeadlineExpired()
        case .pingDue: return l.pingDue()
        case .shutdownIdle: return l.close(.shutdown, outputPending: false)
        case .shutdownPending: return l.close(.shutdown, outputPending: true)
        case .slowConsumer: return l.close(.slowConsumer)
        case .policy: return l.close(.policy)
        case .peerClose: return l.receivedClose(CloseCode(rawValue: 4000))
        case .peerCloseNoCode: return l.receivedClose(.noStatusReceived)
        case .protocolError: return l.protocolError(.invalidUTF8)
        case .drained: return l.outputDrained()
        case .eofPending: return l.peerClosedInput(outputPending: true)
        case .eofNothingPending: return l.peerClosedInput(outputPending: false)
        case .ioFailed: return l.ioFailed()
        }
    }
}

/// What an observer of the actions knows, to check the rules over whole histories.
struct History: Hashable {
    var lifecycle = Lifecycle()
    var closingDeadlinesArmed = 0
    var closeSent = false
    var socketClosed = false
    var sessionTimersArmed = false
    var sawCloseResponse = false
}

@Suite struct ConnectionLifecycleTests {
    // MARK: - The transition table, row by row

    @Test func httpKeepAliveRestartsTheRequestDeadline() {
        var l = Lifecycle()
        #expect(l.requestAnswered(keepAlive: true).actions == [.armRequestDeadline])
        #expect(l.state == .http && l.acceptsRequests)
    }

    @Test func httpCloseStopsRequestsAndFlushesUnderOneDeadline() {
        var l = Lifecycle()
        let t = l.requestAnswered(keepAlive: false)
        #expect(t.actions == [.cancelRequestDeadline, .armClosingDeadline, .flushOutput])
        #expect(l.state == .flushing && !l.acceptsRequests)
        // Later "requests" are not processed and change nothing.
        #expect(l.requestAnswered(keepAlive: true) == .none)
        #expect(l.handedOff() == .none)
        #expect(l.outputDrained().actions == [.shutdownWrite])
        #expect(l.state == .draining)
        #expect(l.peerClosedInput(outputPending: false).actions == [.closeSocket])
        #expect(l.isClosed)
    }

    @Test func handedOffRequestHoldsInputUntilTheReply() {
        var l = Lifecycle()
        #expect(l.handedOff().actions == [.cancelRequestDeadline, .stopReading])
        #expect(l.state == .awaitingReply && !l.acceptsRequests)
        #expect(l.replyArrived(keepAlive: true).actions == [.resumeReading, .armRequestDeadline, .flushOutput])
        #expect(l.state == .http)
        _ = l.handedOff()
        #expect(l.replyArrived(keepAlive: false).actions == [.armClosingDeadline, .flushOutput])
        #expect(l.state == .flushing)
    }

    @Test func shutdownWhileAReplyIsAwaitedClosesAfterIt() {
        var l = Lifecycle()
        _ = l.handedOff()
        #expect(l.close(.shutdown).actions == [.armClosingDeadline])
        #expect(l.state == .awaitingReply)
        // The reply says keep-alive, but the server is closing: flush, then close.
        #expect(l.replyArrived(keepAlive: true).actions == [.flushOutput])
        #expect(l.state == .flushing)
    }

    @Test func upgradeStartsTheSession() {
        var l = Lifecycle()
        #expect(l.upgraded().actions == [.cancelRequestDeadline, .armSessionTimers])
        #expect(l.state == .open && l.acceptsOutgoingFrames && l.decodesFrames && l.isWebSocket)
        #expect(l.pingDue().actions == [.sendPing])
    }

    @Test(arguments: [
        (Lifecycle.CloseCause.idleTimeout, CloseCode.goingAway),
        (.shutdown, .goingAway),
        (.slowConsumer, .tryAgainLater),
        (.policy, .policyViolation),
    ])
    func weCloseWithTheCausesCode(cause: Lifecycle.CloseCause, code: CloseCode) {
        var l = Lifecycle()
        _ = l.upgraded()
        let t = l.close(cause)
        #expect(t.actions == [.stopBroadcasts, .sendClose, .cancelSessionTimers, .armClosingDeadline, .flushOutput])
        #expect(t.closeCode == code)
        #expect(l.state == .closeSent && !l.acceptsOutgoingFrames && l.decodesFrames)
        #expect(l.closeCode == code.rawValue)
        // The peer answers: once our bytes are out, shut down and drain.
        #expect(l.receivedClose(.goingAway).actions == [.flushOutput])
        #expect(l.outputDrained().actions == [.shutdownWrite])
        #expect(l.peerClosedInput(outputPending: false).actions == [.closeSocket])
    }

    @Test func peerCloseIsEchoedAndNoCodeIsAnsweredWith1000() {
        var l = Lifecycle()
        _ = l.upgraded()
        let t = l.receivedClose(CloseCode(rawValue: 4001))
        #expect(t.actions == [.stopBroadcasts, .sendClose, .cancelSessionTimers, .armClosingDeadline, .flushOutput])
        #expect(t.closeCode.rawValue == 4001 && l.closeCode == 4001)
        var m = Lifecycle()
        _ = m.upgraded()
        #expect(m.receivedClose(.noStatusReceived).closeCode == .normalClosure)
    }

    @Test func protocolErrorSendsItsCodeOnceEvenAfterOurClose() {
        var l = Lifecycle()
        _ = l.upgraded()
        let t = l.protocolError(.messageTooBig(limit: 10))
        #expect(t.actions.contains(.sendClose) && t.closeCode == .messageTooBig)
        var m = Lifecycle()
        _ = m.upgraded()
        _ = m.close(.idleTimeout)
        let after = m.protocolError(.invalidUTF8)
        #expect(!after.actions.contains(.sendClose) && after.actions == [.flushOutput])
    }

    @Test func peerGoneWithoutCloseIs1006() {
        var l = Lifecycle()
        _ = l.upgraded()
        #expect(l.peerClosedInput(outputPending: true).actions == [.closeSocket])
        #expect(l.closeCode == CloseCode.abnormalClosure.rawValue)
    }

    @Test func httpHalfCloseAnswersWhatIsQueuedFirst() {
        var l = Lifecycle()
        let t = l.peerClosedInput(outputPending: true)
        #expect(t.actions == [.cancelRequestDeadline, .stopReading, .armClosingDeadline, .flushOutput])
        // EOF already seen: once drained, close at once (no half-close wait).
        #expect(l.outputDrained().actions == [.closeSocket])
        var m = Lifecycle()
        #expect(m.peerClosedInput(outputPending: false).actions == [.closeSocket])
    }

    @Test func closingDeadlineClosesEveryClosingState() {
        for setUp in [
            { (l: inout Lifecycle) in _ = l.upgraded(); _ = l.close(.slowConsumer) },        // closeSent
            { (l: inout Lifecycle) in _ = l.upgraded(); _ = l.receivedClose(.normalClosure) }, // flushing
            { (l: inout Lifecycle) in _ = l.requestAnswered(keepAlive: false); _ = l.outputDrained() }, // draining
            { (l: inout Lifecycle) in _ = l.handedOff(); _ = l.close(.shutdown) },           // awaiting, closing after
        ] {
            var l = Lifecycle()
            setUp(&l)
            #expect(l.closingDeadlineArmed)
            #expect(l.closingDeadlineExpired().actions == [.closeSocket])
            #expect(l.isClosed)
        }
        // Not armed, nothing to expire.
        var open = Lifecycle()
        _ = open.upgraded()
        #expect(open.closingDeadlineExpired() == .none)
    }

    // MARK: - Every reachable history

    /// Explores every state reachable by any sequence of events (the state space is
    /// finite and small) and checks the rules on every transition.
    @Test func everyReachableHistoryKeepsTheRules() {
        var seen: Set<History> = [History()]
        var frontier = [History()]
        var transitions = 0
        while let h = frontier.popLast() {
            for event in LifecycleEvent.allCases {
                var next = h
                let t = event.apply(&next.lifecycle)
                transitions += 1
                let a = t.actions
                let context = "\(event) from \(h.lifecycle) gave \(a)"

                if next.socketClosed {
                    #expect(a.isEmpty, "nothing may happen after the socket is closed: \(context)")
                }
                if a.contains(.armClosingDeadline) { next.closingDeadlinesArmed += 1 }
                #expect(next.closingDeadlinesArmed <= 1, "the closing deadline is armed once: \(context)")
                if h.closeSent {
                    #expect(!a.contains(.sendClose) && !a.contains(.sendPing), "nothing after our Close: \(context)")
                    #expect(!next.lifecycle.acceptsOutgoingFrames, "no frames after our Close: \(context)")
                }
                if a.contains(.sendClose) {
                    next.closeSent = true
                    #expect(a.contains(.stopBroadcasts) && a.contains(.cancelSessionTimers), "Close ends broadcasts and pings: \(context)")
                    #expect(h.lifecycle.state == .open, "Close only from an open session: \(context)")
                }
                if a.contains(.sendPing) { #expect(next.lifecycle.state == .open, "\(context)") }
                if a.contains(.armSessionTimers) { next.sessionTimersArmed = true }
                if a.contains(.cancelSessionTimers) { next.sessionTimersArmed = false }
                if a.contains(.closeSocket) {
                    next.socketClosed = true
                    #expect(next.lifecycle.isClosed, "\(context)")
                }
                if event == .answeredClose && h.lifecycle.state == .http { next.sawCloseResponse = true }
                if next.sawCloseResponse {
                    #expect(!next.lifecycle.acceptsRequests, "no request after Connection: close: \(context)")
                }
                // Any path into closing is bounded: the deadline runs from then on.
                if next.lifecycle.isClosing || (next.lifecycle.state == .awaitingReply && (next.lifecycle.closeAfterReply || next.lifecycle.peerEOF)) {
                    #expect(next.lifecycle.closingDeadlineArmed && next.closingDeadlinesArmed == 1, "closing without a deadline: \(context)")
                    var probe = next.lifecycle
                    #expect(probe.closingDeadlineExpired().actions == [.closeSocket], "the deadline must close: \(context)")
                }
                // Closing states never keep the session timers (no ping, no idle reset).
                if next.lifecycle.isClosing && next.lifecycle.isWebSocket {
                    #expect(!next.sessionTimersArmed, "session timers left running while closing: \(context)")
                }
                if !seen.contains(next) {
                    seen.insert(next)
                    frontier.append(next)
                }
            }
        }
        // Sanity: the exploration reached every state and did real work.
        let states = Set(seen.map(\.lifecycle.state))
        #expect(states == [.http, .awaitingReply, .open, .closeSent, .flushing, .draining, .closed])
        #expect(transitions > 500)
    }

    /// From every reachable state, a peer that does nothing more is gone in bounded steps:
    /// our deadlines alone reach `closed`.
    @Test func deadlinesAloneAlwaysReachClosed() {
        var seen: Set<Lifecycle> = [Lifecycle()]
        var frontier = [Lifecycle()]
        while let l = frontier.popLast() {
            for event in LifecycleEvent.allCases {
                var next = l
                _ = event.apply(&next)
                if seen.insert(next).inserted { frontier.append(next) }
            }
        }
        for start in seen {
            var l = start
            // Only timers fire (the peer is silent and reads nothing): request, idle, closing;
            // and a handed-off request gets its reply, as the edge always sends one.
            var steps = 0
            while !l.isClosed && steps < 5 {
                switch l.state {
                case .http: _ = l.requestDeadlineExpired()
                case .open: _ = l.idleDeadlineExpired()
                case .awaitingReply where !l.closingDeadlineArmed: _ = l.replyArrived(keepAlive: true)
                default: _ = l.closingDeadlineExpired()
                }
                steps += 1
            }
            #expect(l.isClosed, "stuck in \(start) -> \(l)")
        }
    }
}
