// Base64 against Foundation's. The input is used twice:
//  - as bytes to encode: encode gives Foundation's text, and decodedLength of that text is
//    the input's length (the round trip encode -> decode, as far as Base64 decodes);
//  - as text to decode: decodedLength never traps, and accepts exactly the canonical texts,
//    those Foundation decodes and re-encodes to the same text, with the decoded length.
import FoundationEssentials
import WireProtocol

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBase64(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))

    let encoded = Base64.encode(input)
    require(encoded == Data(input).base64EncodedString(), "encode differs from Foundation")
    require(encoded.utf8.count == Base64.encodedLength(size), "encodedLength")
    let length = Array(encoded.utf8).withUnsafeBytes { Base64.decodedLength($0) }
    require(length == size, "decodedLength(encode(\(size) bytes)) = \(String(describing: length))")

    let claimed = input.withUnsafeBytes { Base64.decodedLength($0) }
    var canonical: Int?
    if let decoded = Data(base64Encoded: Data(input)), Array(decoded.base64EncodedString().utf8) == input {
        canonical = decoded.count
    }
    require(claimed == canonical, "decodedLength \(String(describing: claimed)), Foundation's canonical decoding \(String(describing: canonical))")
    return 0
}
