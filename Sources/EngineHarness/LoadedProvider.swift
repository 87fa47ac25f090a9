import COpenSSL
import Foundation

/// swiftasync loaded as an OpenSSL provider, the way an operator's
/// openssl.cnf loads it (openssl-provider.cnf's shape): a library context of
/// its own with the default provider and swiftasync, swiftasync preferred.
/// `plain` is a second library context with the default provider alone,
/// for comparisons.
public final class LoadedProvider {
    public let context: OpaquePointer
    public let provider: OpaquePointer
    public let plain: OpaquePointer
    public let path: String
    private var closed = false

    /// The cnf text, with `settings` as lines of the provider's section, and
    /// more providers (name, section) whose sections `moreSections` holds.
    public static func configuration(modulePath: String, settings: [(String, String)] = [],
                                     moreProviders: [(String, String)] = [], moreSections: String = "") -> String {
        """
        openssl_conf = openssl_init
        [openssl_init]
        providers = provider_section
        alg_section = algorithm_section
        [provider_section]
        default = default_section
        swiftasync = swiftasync_section
        \(moreProviders.map { "\($0.0) = \($0.1)" }.joined(separator: "\n"))
        [default_section]
        activate = 1
        [swiftasync_section]
        module = \(modulePath)
        activate = 1
        \(settings.map { "\($0.0) = \($0.1)" }.joined(separator: "\n"))
        [algorithm_section]
        default_properties = ?provider=swiftasync
        \(moreSections)

        """
    }

    public init(path: String = LoadedEngine.defaultPath(), settings: [(String, String)] = []) throws {
        self.path = path
        let file = NSTemporaryDirectory() + "swiftasync-provider-\(getpid())-\(UUID().uuidString).cnf"
        try Self.configuration(modulePath: path, settings: settings).write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        guard let context = OSSL_LIB_CTX_new() else { throw HarnessError("OSSL_LIB_CTX_new") }
        guard OSSL_LIB_CTX_load_config(context, file) == 1,
              let provider = OSSL_PROVIDER_load(context, "swiftasync") else {
            OSSL_LIB_CTX_free(context)
            throw HarnessError("the provider did not load from \(path)")
        }
        guard let plain = OSSL_LIB_CTX_new(), OSSL_PROVIDER_load(plain, "default") != nil else {
            throw HarnessError("a plain library context")
        }
        self.context = context
        self.provider = provider
        self.plain = plain
    }

    deinit { close() }

    public func close() {
        guard !closed else { return }
        closed = true
        OSSL_PROVIDER_unload(provider)
        OSSL_LIB_CTX_free(context)
        OSSL_LIB_CTX_free(plain)
    }

    /// The provider's counters, in the engine's STATS format (its "swiftasync-stats" parameter).
    public func stats() throws -> EngineStats { try Self.stats(of: provider) }

    /// The counters of a loaded swiftasync provider (any instance: they are the pool's).
    public static func stats(of provider: OpaquePointer) throws -> EngineStats {
        var buffer = [CChar](repeating: 0, count: 8192)
        // The key must outlive the call: an OSSL_PARAM keeps only its pointer.
        let ok = "swiftasync-stats".withCString { key in
            buffer.withUnsafeMutableBufferPointer { text -> Int32 in
                var params = [OSSL_PARAM_construct_utf8_string(key, text.baseAddress, text.count),
                              OSSL_PARAM_construct_end()]
                return OSSL_PROVIDER_get_params(provider, &params)
            }
        }
        guard ok == 1 else { throw HarnessError("the provider gave no counters") }
        return EngineStats(parsing: cString(buffer))
    }

    /// The provider's name, as OpenSSL asks it.
    public var name: String {
        var name: UnsafeMutablePointer<CChar>?
        let ok = "name".withCString { key in
            withUnsafeMutablePointer(to: &name) { slot -> Int32 in
                var params = [OSSL_PARAM_construct_utf8_ptr(key, slot, 0), OSSL_PARAM_construct_end()]
                return OSSL_PROVIDER_get_params(provider, &params)
            }
        }
        guard ok == 1, let name else { return "" }
        return String(cString: name)
    }

    // MARK: Keys

    /// A new key of `type` ("RSA", "EC", "X25519", "X448") in `context`.
    public static func generate(_ type: String, in context: OpaquePointer, bits: Int32 = 2048,
                                group: String? = nil) -> OpaquePointer? {
        guard let generator = EVP_PKEY_CTX_new_from_name(context, type, nil) else { return nil }
        defer { EVP_PKEY_CTX_free(generator) }
        guard EVP_PKEY_keygen_init(generator) == 1 else { return nil }
        if type == "RSA" { EVP_PKEY_CTX_set_rsa_keygen_bits(generator, bits) }
        if let group { EVP_PKEY_CTX_set_group_name(generator, group) }
        var key: OpaquePointer?
        return EVP_PKEY_generate(generator, &key) == 1 ? key : nil
    }

    /// The same private key in another library context (through its DER).
    public static func copy(_ key: OpaquePointer, to context: OpaquePointer) -> OpaquePointer? {
        throughDER(key, encode: { i2d_PrivateKey($0, $1) },
                   decode: { d2i_AutoPrivateKey_ex(nil, $0, $1, context, nil) })
    }

    /// The public half of a key, in another library context (through its DER).
    public static func copyPublic(_ key: OpaquePointer, to context: OpaquePointer) -> OpaquePointer? {
        throughDER(key, encode: { i2d_PUBKEY($0, $1) },
                   decode: { d2i_PUBKEY_ex(nil, $0, $1, context, nil) })
    }

    private static func throughDER(_ key: OpaquePointer,
                                   encode: (OpaquePointer, UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>) -> Int32,
                                   decode: (UnsafeMutablePointer<UnsafePointer<UInt8>?>, Int) -> OpaquePointer?) -> OpaquePointer? {
        var der: UnsafeMutablePointer<UInt8>?
        let length = encode(key, &der)
        guard length > 0, let der else { return nil }
        defer { CRYPTO_free(der, #file, #line) }
        var cursor: UnsafePointer<UInt8>? = UnsafePointer(der)
        return decode(&cursor, Int(length))
    }
}
