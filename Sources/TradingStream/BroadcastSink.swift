/// Where the ingestion edge hands finished frames: the per-core broadcast queues. Called
/// by one actor at a time, in publish order; the implementation must not block.
public protocol BroadcastSink: AnyObject, Sendable {
    func deliver(_ frames: [BroadcastFrame])
}
