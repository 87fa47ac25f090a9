import COpenSSL
import Foundation

/// A server key and a self-signed certificate for it. The key is decoded by
/// the default provider while swiftasync is the default RSA engine, as a
/// server loading its key file would, so its private operations use the engine.
public final class TLSIdentity {
    public let key: OpaquePointer
    public let certificate: OpaquePointer

    public init(rsaBits: Int = 2048) throws {
        let der = try RSAKeyPair.der(bits: rsaBits)
        key = try der.withUnsafeBufferPointer { buffer in
            var cursor: UnsafePointer<UInt8>? = buffer.baseAddress
            guard let key = d2i_AutoPrivateKey(nil, &cursor, der.count) else {
                throw HarnessError("d2i_AutoPrivateKey failed")
            }
            return key
        }
        certificate = X509_new()!
        X509_set_version(certificate, 2)
        ASN1_INTEGER_set(X509_get_serialNumber(certificate), 1)
        X509_gmtime_adj(X509_getm_notBefore(certificate), -3600)
        X509_gmtime_adj(X509_getm_notAfter(certificate), 86400)
        let name = X509_get_subject_name(certificate)
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, "swiftasync.test", -1, -1, 0)
        X509_set_issuer_name(certificate, name)
        X509_set_pubkey(certificate, key)
        guard X509_sign(certificate, key, EVP_sha256()) > 0 else {
            throw HarnessError("X509_sign failed")
        }
    }

    deinit {
        X509_free(certificate)
        EVP_PKEY_free(key)
    }
}

/// Full TLS handshakes between in-memory client and server SSL objects over
/// BIO pairs, the server in SSL_MODE_ASYNC, all connections at once.
public enum TLSHandshakes {
    public struct Options {
        public var connections = 8
        public var maxVersion = TLS1_3_VERSION
        /// TLS 1.2 cipher list, e.g. "ECDHE-RSA-AES128-GCM-SHA256" or "AES128-GCM-SHA256".
        public var cipherList: String?
        /// .callback uses SSL_CTX_set_async_callback; .waitFD polls SSL_get_all_async_fds.
        public var wake = WakeMode.callback
        public var timeout = 60.0
        public init() {}
    }

    public struct Outcome {
        public var completed = 0
        public var wantAsync = 0
        /// Wake-ups where SSL_get_async_status reported ASYNC_STATUS_EAGAIN.
        public var eagainStatuses = 0
        public var versions: Set<String> = []
        public init() {}
    }

    final class Connection {
        let client: OpaquePointer
        let server: OpaquePointer
        var clientDone = false
        var serverDone = false
        var waitingForEngine = false
        init(client: OpaquePointer, server: OpaquePointer) {
            self.client = client
            self.server = server
        }
        deinit {
            SSL_free(client)
            SSL_free(server)
        }
    }

    public static func run(identity: TLSIdentity, options: Options) throws -> Outcome {
        let clientContext = SSL_CTX_new(TLS_client_method())!
        let serverContext = SSL_CTX_new(TLS_server_method())!
        defer { SSL_CTX_free(clientContext); SSL_CTX_free(serverContext) }
        for context in [clientContext, serverContext] {
            harness_ctx_set_max_proto_version(context, options.maxVersion)
            if let ciphers = options.cipherList { SSL_CTX_set_cipher_list(context, ciphers) }
            harness_ctx_disable_resumption(context)
        }
        guard SSL_CTX_use_certificate(serverContext, identity.certificate) == 1,
              SSL_CTX_use_PrivateKey(serverContext, identity.key) == 1 else {
            throw HarnessError("server identity refused")
        }
        harness_ctx_set_mode(serverContext, Int(SSL_MODE_ASYNC))
        if options.wake == .callback {
            guard SSL_CTX_set_async_callback(serverContext, CallbackPipe.sslCallback) == 1 else {
                throw HarnessError("SSL_CTX_set_async_callback failed")
            }
        }
        let batch = CallbackPipe.newBatch()
        let connections = try (0..<options.connections).map { index -> Connection in
            let connection = Connection(client: SSL_new(clientContext)!, server: SSL_new(serverContext)!)
            var clientBIO: OpaquePointer?, serverBIO: OpaquePointer?
            guard BIO_new_bio_pair(&clientBIO, 0, &serverBIO, 0) == 1 else { throw HarnessError("BIO pair") }
            SSL_set_bio(connection.client, clientBIO, clientBIO)
            SSL_set_bio(connection.server, serverBIO, serverBIO)
            SSL_set_connect_state(connection.client)
            SSL_set_accept_state(connection.server)
            SSL_set_async_callback_arg(connection.server, CallbackPipe.argument(batch: batch, index: index))
            return connection
        }

        var outcome = Outcome()
        var rounds = 0
        while connections.contains(where: { !$0.clientDone || !$0.serverDone }) {
            var progressed = false
            for connection in connections {
                if !connection.clientDone {
                    let result = SSL_do_handshake(connection.client)
                    if result == 1 { connection.clientDone = true; progressed = true }
                    else { try expectRetry(connection.client, result, "client") }
                }
                if !connection.serverDone && !connection.waitingForEngine {
                    let result = SSL_do_handshake(connection.server)
                    if result == 1 {
                        connection.serverDone = true
                        progressed = true
                        outcome.versions.insert(String(cString: SSL_get_version(connection.server)))
                    } else if SSL_get_error(connection.server, result) == SSL_ERROR_WANT_ASYNC {
                        connection.waitingForEngine = true
                        outcome.wantAsync += 1
                    } else {
                        try expectRetry(connection.server, result, "server")
                    }
                }
            }
            let waiting = connections.indices.filter { connections[$0].waitingForEngine }
            if waiting.isEmpty {
                guard progressed || rounds < 10_000 else { throw HarnessError("handshakes stalled") }
                rounds += 1
                continue
            }
            let ready = options.wake == .callback
                ? try CallbackPipe.wait(batch: batch, timeout: options.timeout)
                : try readyByAsyncFD(connections, waiting, timeout: options.timeout)
            for index in ready where connections[index].waitingForEngine {
                var status: Int32 = 0
                if SSL_get_async_status(connections[index].server, &status) == 1, status == ASYNC_STATUS_EAGAIN {
                    outcome.eagainStatuses += 1
                }
                connections[index].waitingForEngine = false
            }
        }
        outcome.completed = connections.filter { $0.clientDone && $0.serverDone }.count
        return outcome
    }

    private static func expectRetry(_ ssl: OpaquePointer, _ result: Int32, _ side: String) throws {
        let error = SSL_get_error(ssl, result)
        guard error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE else {
            throw HarnessError("\(side) handshake failed: SSL_get_error \(error)")
        }
    }

    private static func readyByAsyncFD(_ connections: [Connection], _ waiting: [Int], timeout: Double) throws -> [Int] {
        var polled: [pollfd] = []
        var owners: [Int] = []
        for index in waiting {
            var count = 0
            SSL_get_all_async_fds(connections[index].server, nil, &count)
            var fds = [Int32](repeating: -1, count: count)
            SSL_get_all_async_fds(connections[index].server, &fds, &count)
            for fd in fds {
                polled.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
                owners.append(index)
            }
        }
        guard !polled.isEmpty else { throw HarnessError("WANT_ASYNC without an async fd") }
        guard poll(&polled, nfds_t(polled.count), Int32(timeout * 1000)) > 0 else {
            throw HarnessError("no async fd became readable in \(timeout) s")
        }
        return zip(polled, owners).filter { $0.0.revents != 0 }.map(\.1)
    }
}
