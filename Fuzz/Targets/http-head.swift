// HTTPHeadParser.parse: the input is the bytes a client sent.
//  - parsing never traps, and a complete head's ranges lie inside its own head;
//  - a prefix that parses as incomplete, then the whole with `searchFrom` (how a reactor
//    calls it after another read), gives the result of parsing the whole in one go;
//  - a prefix that already fails or completes gives that same result for the whole;
//  - fed in chunks, as parseIncrementally does in the unit tests, the first result that
//    is not .incomplete is the one-go result.
// Each runs under the default limits and under small ones (reaching the 414/431 paths).
import WireProtocol

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzHTTPHead(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    let seed = fnv1a(input)
    for limits in [HTTPLimits(), HTTPLimits(maxHeadBytes: 96, maxHeaderCount: 3)] {
        let whole = HTTPHeadParser.parse(input, limits: limits)
        if case .complete(let head) = whole { checkRanges(head, count: size, limits: limits, input) }

        // Two chunks: every split of a short input, a sample of a long one's.
        var chunker = Chunker(seed: seed)
        let splits = size <= 160 ? Array(0..<size) : (0..<32).map { _ in Int(chunker.next() % UInt64(size)) }
        for split in splits {
            let prefix = UnsafeRawBufferPointer(rebasing: input[..<split])
            switch HTTPHeadParser.parse(prefix, limits: limits) {
            case .incomplete:
                let resumed = HTTPHeadParser.parse(input, limits: limits, searchFrom: max(0, split - 3))
                require(resumed == whole, "split at \(split): resumed \(resumed), whole \(whole)")
            case let early:
                require(early == whole, "split at \(split): prefix gave \(early), whole \(whole)")
            }
        }

        // Many chunks, each parse resuming the search where the previous one stopped.
        var seen = 0
        var result = HTTPHeadParser.Result.incomplete
        while seen < size, result == .incomplete {
            let previous = seen
            seen += max(1, chunker.size(remaining: size - seen))
            result = HTTPHeadParser.parse(UnsafeRawBufferPointer(rebasing: input[..<seen]), limits: limits,
                                          searchFrom: max(0, previous - 3))
        }
        require(result == whole, "incremental \(result), whole \(whole)")
    }
    return 0
}

func checkRanges(_ head: HTTPRequestHead, count: Int, limits: HTTPLimits, _ b: UnsafeRawBufferPointer) {
    let end = head.headLength
    require(end >= 4 && end <= count && end <= limits.maxHeadBytes, "headLength \(end) of \(count)")
    require(b[end - 4] == 13 && b[end - 3] == 10 && b[end - 2] == 13 && b[end - 1] == 10, "head does not end in CRLFCRLF")
    require(head.headerCount <= limits.maxHeaderCount, "headerCount \(head.headerCount)")
    let ranges: [Range<Int>?] = [head.methodRange, head.target, head.path, head.query, head.host, head.origin,
                                 head.authorization, head.contentType, head.webSocketKey, head.webSocketVersion,
                                 head.webSocketProtocol, head.webSocketExtensions, head.forwardedFor, head.ifNoneMatch]
    for case let r? in ranges {
        require(r.lowerBound >= 0 && r.upperBound <= end, "range \(r) outside the head (\(end) bytes)")
    }
    require(!head.methodRange.isEmpty && head.methodRange.lowerBound == 0, "method range \(head.methodRange)")
    require(head.target.lowerBound > head.methodRange.upperBound, "target \(head.target) overlaps the method")
    require(head.target.contains(head.path.lowerBound) && head.path.upperBound <= head.target.upperBound, "path outside the target")
    if let q = head.query { require(q.lowerBound > head.path.upperBound && q.upperBound == head.target.upperBound, "query \(q)") }
    require(head.versionMinor <= 9, "version 1.\(head.versionMinor)")
    if let n = head.contentLength { require(n >= 0 && !head.chunked, "content length \(n) with chunked \(head.chunked)") }
    require(head.webSocketKeyCount > 0 || head.webSocketKey == nil, "key without a count")
    let isGet = head.methodRange.count == 3 && b[0] == 71 && b[1] == 69 && b[2] == 84
    require((head.method == .get) == isGet, "method \(head.method) for its bytes")
}
