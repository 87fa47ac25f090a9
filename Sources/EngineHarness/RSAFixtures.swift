import COpenSSL
import Foundation

/// One RSA key twice: `engineKey` was created while swiftasync was the default
/// RSA engine, so its private operations go through the engine;
/// `softwareKey` is the same key on default OpenSSL's software method.
public final class RSAKeyPair: @unchecked Sendable {
    public let bits: Int
    public let engineKey: OpaquePointer
    public let softwareKey: OpaquePointer

    private static let generated = Locked<[Int: [UInt8]]>([:])

    /// DER of a key of `bits`, generated once per process.
    public static func der(bits: Int) throws -> [UInt8] {
        if let der = generated.withLock({ $0[bits] }) { return der }
        let der = try freshDER(bits: bits)
        generated.withLock { $0[bits] = der }
        return der
    }

    /// DER of a newly generated key of `bits`.
    static func freshDER(bits: Int) throws -> [UInt8] {
        let rsa = RSA_new_method(nil)!
        defer { RSA_free(rsa) }
        let exponent = BN_new()!
        defer { BN_free(exponent) }
        BN_set_word(exponent, UInt(RSA_F4))
        guard RSA_generate_key_ex(rsa, Int32(bits), exponent, nil) == 1 else {
            throw HarnessError("RSA \(bits) key generation failed")
        }
        var out: UnsafeMutablePointer<UInt8>?
        let length = i2d_RSAPrivateKey(rsa, &out)
        guard length > 0, let out else { throw HarnessError("i2d_RSAPrivateKey failed") }
        defer { CRYPTO_free(out, #file, #line) }
        return Array(UnsafeBufferPointer(start: out, count: Int(length)))
    }

    /// The process's key of `bits`, or with `fresh` one of its own.
    public init(bits: Int, fresh: Bool = false) throws {
        self.bits = bits
        let der = try fresh ? Self.freshDER(bits: bits) : Self.der(bits: bits)
        func decode() throws -> OpaquePointer {
            try der.withUnsafeBufferPointer { buffer in
                var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
                guard let rsa = d2i_RSAPrivateKey(nil, &cursor, der.count) else {
                    throw HarnessError("d2i_RSAPrivateKey failed")
                }
                return rsa
            }
        }
        engineKey = try decode()
        softwareKey = try decode()
        RSA_set_method(softwareKey, RSA_PKCS1_OpenSSL())
    }

    deinit {
        RSA_free(engineKey)
        RSA_free(softwareKey)
    }

    public var size: Int { Int(RSA_size(softwareKey)) }

    /// Whether the key's method is the engine's: the precondition of every differential test.
    public var engineKeyUsesEngine: Bool { RSA_get0_engine(engineKey) != nil }

    /// An EVP_PKEY over the engine-backed key (for EVP-level and TLS use).
    public func engineEVPKey() -> OpaquePointer {
        let pkey = EVP_PKEY_new()!
        RSA_up_ref(engineKey)
        EVP_PKEY_assign(pkey, EVP_PKEY_RSA, UnsafeMutableRawPointer(engineKey))
        return pkey
    }
}

/// An RSA private-key operation as RSA_METHOD sees it.
public struct RSAPrivateOperation: CustomStringConvertible, Sendable {
    public enum Kind: String, Sendable { case encrypt = "sign", decrypt }
    public let kind: Kind
    public let padding: Int32
    public let input: [UInt8]

    public init(kind: Kind, padding: Int32, input: [UInt8]) {
        self.kind = kind
        self.padding = padding
        self.input = input
    }

    public var description: String {
        "\(kind.rawValue)/\(Self.paddingName(padding)) (\(input.count) bytes)"
    }

    public static func paddingName(_ padding: Int32) -> String {
        switch padding {
        case RSA_PKCS1_PADDING: "pkcs1"
        case RSA_NO_PADDING: "none"
        case RSA_X931_PADDING: "x931"
        case RSA_PKCS1_OAEP_PADDING: "oaep"
        default: "padding-\(padding)"
        }
    }

    /// Every padding default OpenSSL supports in priv_enc and priv_dec.
    public static let signPaddings: [Int32] = [RSA_PKCS1_PADDING, RSA_NO_PADDING, RSA_X931_PADDING]
    public static let decryptPaddings: [Int32] = [RSA_PKCS1_PADDING, RSA_PKCS1_OAEP_PADDING, RSA_NO_PADDING]

    /// A valid input for this padding and key, random each time.
    public static func random(_ kind: Kind, padding: Int32, key: RSAKeyPair) -> RSAPrivateOperation {
        let size = key.size
        switch kind {
        case .encrypt:
            var input: [UInt8]
            switch padding {
            case RSA_NO_PADDING:
                input = randomBytes(size)
                input[0] = 0                        // below n
            case RSA_X931_PADDING:
                input = randomBytes(32) + [0x34]     // a SHA-256 digest and its X9.31 id
            default:
                input = randomBytes(36)              // an MD5+SHA1 TLS 1.1 digest's length
            }
            return RSAPrivateOperation(kind: kind, padding: padding, input: input)
        case .decrypt:
            if padding == RSA_NO_PADDING {
                var input = randomBytes(size)
                input[0] = 0
                return RSAPrivateOperation(kind: kind, padding: padding, input: input)
            }
            let plain = randomBytes(32)
            var cipher = [UInt8](repeating: 0, count: size)
            let length = RSA_public_encrypt(Int32(plain.count), plain, &cipher, key.softwareKey, padding)
            precondition(length == size, "RSA_public_encrypt failed")
            return RSAPrivateOperation(kind: kind, padding: padding, input: cipher)
        }
    }

    /// A job body running this operation on `rsa`; its output lands in `box`.
    public func jobBody(on rsa: OpaquePointer, into box: OutputBox) -> () -> Int32 {
        { let (result, output) = perform(on: rsa); box.output = output; return result }
    }

    /// A job body per operation, each running it on `rsa`, and the boxes their outputs land in.
    public static func jobBodies(_ operations: [RSAPrivateOperation], on rsa: OpaquePointer)
        -> (bodies: [() -> Int32], outputs: [OutputBox]) {
        let outputs = operations.map { _ in OutputBox() }
        return (zip(operations, outputs).map { $0.jobBody(on: rsa, into: $1) }, outputs)
    }

    /// The call itself on one key: (return value, output bytes).
    public func perform(on rsa: OpaquePointer) -> (result: Int32, output: [UInt8]) {
        var output = [UInt8](repeating: 0, count: Int(RSA_size(rsa)))
        let result = input.withUnsafeBufferPointer { from in
            output.withUnsafeMutableBufferPointer { to in
                kind == .encrypt
                    ? RSA_private_encrypt(Int32(from.count), from.baseAddress, to.baseAddress, rsa, padding)
                    : RSA_private_decrypt(Int32(from.count), from.baseAddress, to.baseAddress, rsa, padding)
            }
        }
        return (result, Array(output.prefix(max(Int(result), 0))))
    }
}

public func randomBytes(_ count: Int) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    precondition(RAND_bytes(&bytes, Int32(count)) == 1)
    return bytes
}
