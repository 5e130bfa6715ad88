/// Where the ingestion edge hands finished frames: the per-core broadcast queues. Called
/// by one actor at a time, in publish order; the implementation must not block.
public protocol BroadcastSink: AnyObject, Sendable {
    func deliver(_ frames: [BroadcastFrame])
    func beginEpoch(_ epoch: String)
}

extension BroadcastSink {
    /// The frames delivered from now on belong to a new epoch (the cluster's Redis lost the
    /// stream): everything delivered before is history no resume may name. Ordered with
    /// `deliver` (same caller). Default: nothing to reset.
    public func beginEpoch(_ epoch: String) {}
}
