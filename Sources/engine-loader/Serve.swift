import ArgumentParser
import COpenSSL
import EngineHarness
import Foundation

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "An event-driven TLS server on one thread: the reference for using the engine's async mode.",
        discussion: """
            Listens on 127.0.0.1, answers each HTTP/1.1 request with "ok" and closes the connection \
            (every client makes a full handshake). With --handshakes N it stops after N and prints \
            the handshakes and the event-loop thread's CPU time.
            """)

    @OptionGroup var options: EngineOptions

    @Option(help: "Port on 127.0.0.1.")
    var port = 8443

    @Flag(help: "Plain OpenSSL, no engine (for comparison).")
    var noEngine = false

    @Option(help: "Certificate key: rsa2048, rsa3072, rsa4096 or p256.")
    var key = "rsa2048"

    @Flag(help: "swiftasync is this process's provider, through OPENSSL_CONF (openssl-provider.cnf, openssl-pkcs11.cnf): no engine, async mode.")
    var provider = false

    @Option(help: "The certificate's PEM file (with --private-key), instead of a generated --key.")
    var certificate: String?

    @Option(help: "Its private key: a PEM file, or a URI such as 'pkcs11:token=t1;object=rsa1;type=private'.")
    var privateKey: String?

    @Option(help: "Highest TLS version: 1.2 or 1.3.")
    var tls = "1.3"

    @Option(help: "Stop after this many completed handshakes.")
    var handshakes: Int?

    func run() throws {
        signal(SIGPIPE, SIG_IGN)   // a client that hangs up must not end the server
        if provider && OSSL_PROVIDER_available(nil, "swiftasync") != 1 {
            throw HarnessError("--provider: no swiftasync provider in OPENSSL_CONF's configuration")
        }
        let engine = noEngine || provider ? nil : try options.load()
        defer { engine?.close() }
        let identity: TLSIdentity
        switch (certificate, privateKey) {
        case let (certificate?, privateKey?):
            identity = try TLSIdentity(certificateFile: certificate, privateKey: privateKey)
        case (nil, nil):
            identity = key == "p256" ? try TLSIdentity(ecGroup: "P-256")
                : try TLSIdentity(rsaBits: Int(key.dropFirst(3)) ?? 2048)
        default:
            throw ValidationError("--certificate and --private-key go together")
        }
        guard let context = SSL_CTX_new(TLS_server_method()) else { throw HarnessError("SSL_CTX_new") }
        defer { SSL_CTX_free(context) }
        guard SSL_CTX_use_certificate(context, identity.certificate) == 1,
              SSL_CTX_use_PrivateKey(context, identity.key) == 1 else { throw HarnessError("server identity refused") }
        harness_ctx_disable_resumption(context)
        harness_ctx_set_max_proto_version(context, tls == "1.2" ? TLS1_2_VERSION : TLS1_3_VERSION)
        if engine != nil || provider { harness_ctx_set_mode(context, Int(SSL_MODE_ASYNC)) }
        let server = try EventLoopServer(context: context, port: port)
        let front = engine != nil ? "swiftasync engine, async mode" : provider ? "swiftasync provider, async mode" : "no engine"
        FileHandle.standardOutput.write(Data("serving https://127.0.0.1:\(port)/ (\(front), \(privateKey ?? key), TLS up to \(tls))\n".utf8))
        let summary = server.run(handshakes: handshakes)
        let perHandshake = summary.handshakes > 0 ? summary.loopCPUSeconds / Double(summary.handshakes) * 1e6 : 0
        print("handshakes=\(summary.handshakes) loop_cpu_seconds=\(String(format: "%.3f", summary.loopCPUSeconds)) loop_cpu_us_per_handshake=\(String(format: "%.1f", perHandshake))")
        if let engine { print(try engine.stats().text, terminator: "") }
        if provider, let instance = OSSL_PROVIDER_load(nil, "swiftasync") {
            defer { OSSL_PROVIDER_unload(instance) }
            print(try LoadedProvider.stats(of: instance).text, terminator: "")
        }
    }
}
