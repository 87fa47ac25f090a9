import COpenSSL
import Foundation

/// A SoftHSM token of the test's own (a token folder under the temporary
/// directory), and library contexts that reach its keys: through
/// pkcs11-provider alone, and through swiftasync forwarding to it beside a
/// swiftasync forwarding to default (openssl-pkcs11.cnf's shape).
///
/// One token per process: SoftHSM reads SOFTHSM2_CONF at its first
/// C_Initialize, and with pkcs11-provider's `no-deinit` never finalises.
public final class SoftHSMToken: Sendable {
    public static let pin = "1234"
    public static let label = "swiftasync"
    public static let tokenModule = "/usr/lib/softhsm/libsofthsm2.so"
    public let directory: String
    /// pkcs11-provider's module (scripts/fetch-pkcs11-provider.sh).
    public let providerModule: String

    private static let made = Result { try SoftHSMToken() }

    public static func shared() throws -> SoftHSMToken { try made.get() }

    /// pkcs11-provider's module: SWIFTASYNC_PKCS11_PROVIDER, or the one
    /// scripts/fetch-pkcs11-provider.sh unpacked into the package's folder.
    public static func findProviderModule() -> String? {
        if let named = ProcessInfo.processInfo.environment["SWIFTASYNC_PKCS11_PROVIDER"], !named.isEmpty {
            return FileManager.default.fileExists(atPath: named) ? named : nil
        }
        let lib = FileManager.default.currentDirectoryPath + "/.build-pkcs11-provider/root/usr/lib"
        let arches = (try? FileManager.default.contentsOfDirectory(atPath: lib)) ?? []
        return arches.map { "\(lib)/\($0)/ossl-modules/pkcs11.so" }
            .first { FileManager.default.fileExists(atPath: $0) }
    }

    private init() throws {
        guard let module = Self.findProviderModule() else {
            throw HarnessError("no pkcs11-provider module (scripts/fetch-pkcs11-provider.sh)")
        }
        guard FileManager.default.fileExists(atPath: Self.tokenModule) else {
            throw HarnessError("no SoftHSM (\(Self.tokenModule))")
        }
        providerModule = module
        directory = NSTemporaryDirectory() + "swiftasync-token-\(getpid())"
        try? FileManager.default.removeItem(atPath: directory)
        try FileManager.default.createDirectory(atPath: directory + "/tokens", withIntermediateDirectories: true)
        try """
            directories.tokendir = \(directory)/tokens
            objectstore.backend = file
            log.level = ERROR

            """.write(toFile: directory + "/softhsm2.conf", atomically: true, encoding: .utf8)
        setenv("SOFTHSM2_CONF", directory + "/softhsm2.conf", 1)
        try Self.run("softhsm2-util", ["--init-token", "--free", "--label", Self.label,
                                       "--pin", Self.pin, "--so-pin", "5678"])
    }

    /// Runs a tool to completion; throws with its output if it fails.
    static func run(_ tool: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [tool] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw HarnessError("\(tool) \(arguments.joined(separator: " ")): "
                               + (String(data: text, encoding: .utf8) ?? ""))
        }
    }

    /// Writes both halves of `key` into the token as LABEL with ID, usable as `usages` (pkcs11-tool's).
    public func importKey(_ key: OpaquePointer, label: String, id: String, usages: [String]) throws {
        let privateFile = "\(directory)/\(label).key.der", publicFile = "\(directory)/\(label).pub.der"
        try Self.der(of: key, encode: { i2d_PrivateKey($0, $1) }).write(to: URL(fileURLWithPath: privateFile))
        try Self.der(of: key, encode: { i2d_PUBKEY($0, $1) }).write(to: URL(fileURLWithPath: publicFile))
        defer { try? FileManager.default.removeItem(atPath: privateFile) }
        let common = ["--module", Self.tokenModule, "--token-label", Self.label, "--login", "--pin", Self.pin,
                      "--id", id, "--label", label]
        try Self.run("pkcs11-tool", common + ["--write-object", privateFile, "--type", "privkey"]
                     + usages.map { "--usage-\($0)" })
        try Self.run("pkcs11-tool", common + ["--write-object", publicFile, "--type", "pubkey"])
    }

    private static func der(of key: OpaquePointer,
                            encode: (OpaquePointer, UnsafeMutablePointer<UnsafeMutablePointer<UInt8>?>) -> Int32) throws -> Data {
        var bytes: UnsafeMutablePointer<UInt8>?
        let length = encode(key, &bytes)
        guard length > 0, let bytes else { throw HarnessError("DER of a key") }
        defer { CRYPTO_clear_free(bytes, Int(length), #file, #line) }
        return Data(bytes: bytes, count: Int(length))
    }

    public static func uri(_ label: String) -> String {
        "pkcs11:token=\(Self.label);object=\(label);type=private"
    }

    /// pkcs11-provider's PEM form of a key's URI (what HAProxy's `crt` and
    /// nginx read): SEQUENCE { VisibleString description, UTF8String uri }.
    public static func uriPEM(_ label: String) -> String {
        func element(_ tag: UInt8, _ content: [UInt8]) -> [UInt8] {
            let length = content.count
            let encodedLength: [UInt8] = length < 0x80 ? [UInt8(length)]
                : length < 0x100 ? [0x81, UInt8(length)] : [0x82, UInt8(length >> 8), UInt8(length & 0xff)]
            return [tag] + encodedLength + content
        }
        let body = element(0x1a, Array("PKCS#11 Provider URI v1.0".utf8)) + element(0x0c, Array(uri(label).utf8))
        let base64 = Data(element(0x30, body)).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return "-----BEGIN PKCS#11 PROVIDER URI-----\n\(base64)\n-----END PKCS#11 PROVIDER URI-----\n"
    }

    /// A key's private half as PEM (PKCS#8), for tools that take a file.
    public static func privatePEM(_ key: OpaquePointer) throws -> String {
        guard let bio = BIO_new(BIO_s_mem()) else { throw HarnessError("BIO_new") }
        defer { BIO_free(bio) }
        guard PEM_write_bio_PrivateKey(bio, key, nil, nil, 0, nil, nil) == 1 else { throw HarnessError("PEM of a key") }
        var text = [UInt8](repeating: 0, count: Int(BIO_ctrl_pending(bio)))
        guard BIO_read(bio, &text, Int32(text.count)) == Int32(text.count) else { throw HarnessError("PEM of a key") }
        return String(decoding: text, as: UTF8.self)
    }

    /// pkcs11-provider's own section: the token's module, its PIN, and what SoftHSM needs.
    func targetSection(_ name: String, tokenModule: String = SoftHSMToken.tokenModule) -> String {
        """
        [\(name)]
        module = \(providerModule)
        pkcs11-module-path = \(tokenModule)
        pkcs11-module-token-pin = \(Self.pin)
        pkcs11-module-quirks = no-deinit no-operation-state
        pkcs11-module-cache-sessions = 64
        activate = 1

        """
    }

    /// default and pkcs11-provider, as an application without swiftasync has them.
    public func aloneConfiguration(tokenModule: String = SoftHSMToken.tokenModule) -> String {
        """
        openssl_conf = openssl_init
        [openssl_init]
        providers = provider_section
        [provider_section]
        default = default_section
        pkcs11 = pkcs11_section
        [default_section]
        activate = 1

        """ + targetSection("pkcs11_section", tokenModule: tokenModule)
    }

    /// openssl-pkcs11.cnf's shape; FILE is where it is written (its forward_config);
    /// `storeSettings` are lines of the token instance's section (its own workers).
    /// `tokenModule`: the PKCS#11 module pkcs11-provider calls (a FaultyDevice's, say).
    public func throughConfiguration(swiftasync: String, file: String, settings: [(String, String)] = [],
                                     storeSettings: [(String, String)] = [],
                                     tokenModule: String = SoftHSMToken.tokenModule) -> String {
        LoadedProvider.configuration(modulePath: swiftasync, settings: settings,
                                     moreProviders: [("swiftasync-pkcs11", "swiftasync_pkcs11_section")],
                                     moreSections: """
                                         [swiftasync_pkcs11_section]
                                         module = \(swiftasync)
                                         activate = 1
                                         forward = provider=pkcs11
                                         forward_section = pkcs11_section
                                         forward_config = \(file)
                                         \(storeSettings.map { "\($0.0) = \($0.1)" }.joined(separator: "\n"))

                                         """ + targetSection("pkcs11_section", tokenModule: tokenModule))
    }

    /// A library context loaded from `configuration` (written to FILE).
    public static func context(_ configuration: String, file: String) throws -> OpaquePointer {
        try configuration.write(toFile: file, atomically: true, encoding: .utf8)
        guard let context = OSSL_LIB_CTX_new() else { throw HarnessError("OSSL_LIB_CTX_new") }
        guard OSSL_LIB_CTX_load_config(context, file) == 1 else {
            OSSL_LIB_CTX_free(context)
            throw HarnessError("loading \(file)")
        }
        return context
    }
}

/// The token behind scripts/slow-pkcs11.c (a test fixture, built here): a
/// device whose signing, decrypting and deriving calls can be made to fail
/// (CKR_DEVICE_ERROR) or to hang, switched while the test runs. One per
/// process: the fixture reads its environment once.
public final class FaultyDevice: Sendable {
    public enum Fault: String, Sendable {
        case none = "", fail, hang
    }

    /// The PKCS#11 module to name as pkcs11-module-path.
    public let module: String
    private let faultFile: String

    private static let made = Result { try FaultyDevice() }

    public static func shared() throws -> FaultyDevice { try made.get() }

    private init() throws {
        let token = try SoftHSMToken.shared()
        var root = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        module = token.directory + "/slow-pkcs11.so"
        faultFile = token.directory + "/fault"
        try SoftHSMToken.run("cc", ["-shared", "-fPIC", "-O2", "-I/usr/include/p11-kit-1", "-o", module,
                                    root.appendingPathComponent("scripts/slow-pkcs11.c").path, "-ldl", "-lpthread"])
        setenv("SLOW_PKCS11_MODULE", SoftHSMToken.tokenModule, 1)
        setenv("SLOW_PKCS11_FAULT_FILE", faultFile, 1)
        set(.none)
    }

    /// What a process that loads `module` needs (this one has it set already).
    public var environment: [String: String] {
        ["SLOW_PKCS11_MODULE": SoftHSMToken.tokenModule, "SLOW_PKCS11_FAULT_FILE": faultFile]
    }

    /// Takes effect at the device's next call (a hanging call returns once this is not .hang).
    public func set(_ fault: Fault) {
        try? (fault.rawValue + "\n").write(toFile: faultFile, atomically: true, encoding: .utf8)
    }
}
