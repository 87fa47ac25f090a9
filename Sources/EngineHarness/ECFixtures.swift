import COpenSSL
import Foundation

/// Named curves as default OpenSSL knows them.
public enum ECCurves {
    public struct Curve: CustomStringConvertible, Sendable {
        public let nid: Int32
        public var name: String { String(cString: OBJ_nid2sn(nid)) }
        public var description: String { name }
    }

    /// Every built-in named curve (EC_get_builtin_curves).
    public static var all: [Curve] {
        let count = EC_get_builtin_curves(nil, 0)
        var curves = [EC_builtin_curve](repeating: EC_builtin_curve(), count: count)
        _ = EC_get_builtin_curves(&curves, count)
        return curves.map { Curve(nid: $0.nid) }
    }

    public static let tls: [Curve] = [NID_X9_62_prime256v1, NID_secp384r1, NID_secp521r1, NID_secp256k1]
        .map { Curve(nid: $0) }
}

/// An EC key twice, like RSAKeyPair: `engineKey` uses the engine's
/// EC_KEY_METHOD, `softwareKey` is the same key on OpenSSL's software method.
public final class ECKeyPair: @unchecked Sendable {
    public let curve: ECCurves.Curve
    public let engineKey: OpaquePointer
    public let softwareKey: OpaquePointer

    /// Generates the key through the engine, in `mode` (so keygen itself is under test).
    public init(curve: ECCurves.Curve, mode: ExecutionMode) throws {
        self.curve = curve
        guard let key = EC_KEY_new_by_curve_name(curve.nid) else { throw HarnessError("no curve \(curve)") }
        let generated = try SelfCheck.inMode(mode) { EC_KEY_generate_key(key) }
        guard generated == 1, let copy = EC_KEY_dup(key) else {
            EC_KEY_free(key)
            throw HarnessError("EC_KEY_generate_key(\(curve)) \(mode.rawValue) failed")
        }
        EC_KEY_set_method(copy, EC_KEY_OpenSSL())
        engineKey = key
        softwareKey = copy
    }

    deinit {
        EC_KEY_free(engineKey)
        EC_KEY_free(softwareKey)
    }

    public var engineKeyUsesEngine: Bool { EC_KEY_get0_engine(engineKey) != nil }
    public var group: OpaquePointer { EC_KEY_get0_group(softwareKey) }
    public var publicKey: OpaquePointer { EC_KEY_get0_public_key(softwareKey) }
    /// The software key's own consistency check (private and public agree, point on curve).
    public var isValid: Bool { EC_KEY_check_key(softwareKey) == 1 }

    /// ECDH: (return, secret) of key's compute_key with peer.
    public static func derive(_ key: OpaquePointer, peer: OpaquePointer?) -> (Int32, [UInt8]) {
        var secret = [UInt8](repeating: 0, count: 133)
        let length = ECDH_compute_key(&secret, secret.count, peer, key, nil)
        return (length, Array(secret.prefix(max(Int(length), 0))))
    }
}

/// X25519 and X448 test vectors (RFC 7748, section 6).
public struct ECXVector: Sendable {
    public let name: String
    public let nid: Int32
    public let alicePrivate: [UInt8]
    public let alicePublic: [UInt8]
    public let bobPrivate: [UInt8]
    public let bobPublic: [UInt8]
    public let shared: [UInt8]

    public static let x25519 = ECXVector(
        name: "X25519", nid: NID_X25519,
        alicePrivate: hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
        alicePublic: hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"),
        bobPrivate: hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"),
        bobPublic: hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"),
        shared: hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"))

    public static let x448 = ECXVector(
        name: "X448", nid: NID_X448,
        alicePrivate: hex("9a8f4925d1519f5775cf46b04b5800d4ee9ee8bae8bc5565d498c28dd9c9baf574a9419744897391006382a6f127ab1d9ac2d8c0a598726b"),
        alicePublic: hex("9b08f7cc31b7e3e67d22d5aea121074a273bd2b83de09c63faa73d2c22c5d9bbc836647241d953d40c5b12da88120d53177f80e532c41fa0"),
        bobPrivate: hex("1c306a7ac2a0e2e0990b294470cba339e6453772b075811d8fad0d1d6927c120bb5ee8972b0d3e21374c9c921b09d1b0366f10b65173992d"),
        bobPublic: hex("3eb7a829b0cd20f5bcfc0b599b6feccf6da4627107bdb0d4f345b43027d8b972fc3e34fb4232a13ca706dcb57aec3dae07bdc1c67bf33609"),
        shared: hex("07fff4181ac6cc95ec1c16a94a0f74d12da232ce40a77552281d282bb60c0b56fd2464c335543936521c24403085d59a449a5037514a879d"))

    public static let all = [x25519, x448]

    public var keyLength: Int { alicePrivate.count }

    public func privateKey(_ bytes: [UInt8]) -> OpaquePointer? {
        EVP_PKEY_new_raw_private_key(nid, nil, bytes, bytes.count)
    }

    public func publicKey(_ bytes: [UInt8]) -> OpaquePointer? {
        EVP_PKEY_new_raw_public_key(nid, nil, bytes, bytes.count)
    }

    /// EVP_PKEY_derive of private with peer: (return, secret).
    public static func derive(_ privateKey: OpaquePointer, _ peer: OpaquePointer) -> (Int32, [UInt8]) {
        guard let context = EVP_PKEY_CTX_new(privateKey, nil) else { return (0, []) }
        defer { EVP_PKEY_CTX_free(context) }
        var secret = [UInt8](repeating: 0, count: 64)
        var length = secret.count
        guard EVP_PKEY_derive_init(context) > 0, EVP_PKEY_derive_set_peer(context, peer) > 0 else { return (-1, []) }
        let result = EVP_PKEY_derive(context, &secret, &length)
        return (result, result > 0 ? Array(secret.prefix(length)) : [])
    }

    /// A fresh key pair from this curve's EVP_PKEY keygen.
    public func generate() -> OpaquePointer? {
        guard let context = EVP_PKEY_CTX_new_id(nid, nil) else { return nil }
        defer { EVP_PKEY_CTX_free(context) }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen_init(context) > 0, EVP_PKEY_keygen(context, &key) > 0 else { return nil }
        return key
    }

    public static func rawPublic(_ key: OpaquePointer) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 64)
        var length = bytes.count
        guard EVP_PKEY_get_raw_public_key(key, &bytes, &length) == 1 else { return [] }
        return Array(bytes.prefix(length))
    }

    public static func rawPrivate(_ key: OpaquePointer) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 64)
        var length = bytes.count
        guard EVP_PKEY_get_raw_private_key(key, &bytes, &length) == 1 else { return [] }
        return Array(bytes.prefix(length))
    }
}

public func hex(_ text: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var index = text.startIndex
    while index < text.endIndex {
        let next = text.index(index, offsetBy: 2)
        bytes.append(UInt8(text[index..<next], radix: 16)!)
        index = next
    }
    return bytes
}
