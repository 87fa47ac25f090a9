// swift-tools-version:6.0
import PackageDescription

// The engine (.so) is SwiftEngine + CEngineShim; everything else loads it
// through OpenSSL's dynamic engine, exactly as an application would.
let opensslCompat: [CSetting] = [.define("OPENSSL_API_COMPAT", to: "0x10101000L")]

// Intel's crypto_mb, unpacked by scripts/fetch-crypto-mb.sh: the 8-lane math,
// linked statically into the engine. Without it (make MULTIBUFFER=0) every
// operation is computed by OpenSSL's scalar code.
let cryptoMB = Context.environment["SWIFTASYNC_CRYPTO_MB"].flatMap { $0.isEmpty ? nil : $0 }
let multibufferC: [CSetting] = cryptoMB.map {
    [.define("SA_WITH_CRYPTO_MB"), .unsafeFlags(["-I", "\($0)/include"])]
} ?? []
let multibufferLink: [LinkerSetting] = cryptoMB.map {
    [.unsafeFlags(["\($0)/lib/libcrypto_mb.a"])]
} ?? []

// Built against an OpenSSL without the ENGINE API (4.0): the provider front
// end only (scripts/build-engine.sh decides from that OpenSSL's headers).
let providerOnly = Context.environment["SWIFTASYNC_FRONT_ENDS"] == "provider"
let shimExcluded = ["exports.map", "exports-provider.map"] + (providerOnly ? ["engine"] : [])

let package = Package(
    name: "swiftasync",
    products: [
        .library(name: "swiftasync", type: .dynamic, targets: ["SwiftEngine"]),
        .executable(name: "engine-loader", targets: ["engine-loader"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),
        // engine/ and provider/ are the two front ends; the record, the
        // pause/wake code and the math beside them are shared.
        .target(name: "CEngineShim", dependencies: ["COpenSSL"], exclude: shimExcluded,
                cSettings: opensslCompat + multibufferC + [.headerSearchPath(".")],
                linkerSettings: multibufferLink),
        .target(name: "SwiftEngine", dependencies: ["CEngineShim", "CLinux"]),
        .systemLibrary(name: "CLinux"),
        .target(name: "EngineHarness", dependencies: ["COpenSSL", "CLinux"]),
        .executableTarget(name: "engine-loader", dependencies: [
            "EngineHarness", "CLinux",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "SwiftEngineTests", dependencies: ["SwiftEngine", "EngineHarness"]),
        .testTarget(name: "EngineTests", dependencies: ["EngineHarness", "COpenSSL"]),
    ]
)
