// An independent OPC UA server (node-opcua) for edgeplane-opcua's tests.
// usage: node server.js PORT PKI_FOLDER    -> prints "READY PORT" when it listens
// Serves, in namespace 2 (urn:edgeplane:node-test), under Objects/Plant:
//   Temperature (Double, changes every 100 ms), Counter (UInt32), Setpoint (Double, writable),
//   Waveform (Double[64], changes every 100 ms), and method Double(x: Double) -> Double.
"use strict";
const path = require("path");
const { OPCUAServer, OPCUACertificateManager, Variant, DataType, StatusCodes, MessageSecurityMode, SecurityPolicy } = require("node-opcua");

const port = parseInt(process.argv[2], 10);
const pki = process.argv[3];

async function main() {
    // node-opcua writes its PKI under ~/.config unless given its own folders
    const serverCertificateManager = new OPCUACertificateManager({ rootFolder: path.join(pki, "server"), automaticallyAcceptUnknownCertificate: true });
    const userCertificateManager = new OPCUACertificateManager({ rootFolder: path.join(pki, "user"), automaticallyAcceptUnknownCertificate: true });
    await serverCertificateManager.initialize();
    await userCertificateManager.initialize();
    const server = new OPCUAServer({
        port,
        hostname: "127.0.0.1",
        resourcePath: "/UA/edgeplane",
        serverCertificateManager,
        userCertificateManager,
        securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
        securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256],
        allowAnonymous: true,
        userManager: { isValidUser: (user, password) => user === "operator" && password === "s3cret-pw" },
        buildInfo: { productName: "edgeplane node-opcua test server" },
    });
    await server.initialize();
    const addressSpace = server.engine.addressSpace;
    const namespace = addressSpace.registerNamespace("urn:edgeplane:node-test");
    const plant = namespace.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Plant", nodeId: "s=Plant" });
    let step = 0;
    let setpoint = 42.0;
    const temperature = namespace.addVariable({ componentOf: plant, browseName: "Temperature", minimumSamplingInterval: 100, nodeId: "s=Temperature", dataType: "Double",
        value: { get: () => new Variant({ dataType: DataType.Double, value: 20 + Math.sin(step / 10) }) } });
    namespace.addVariable({ componentOf: plant, browseName: "Counter", minimumSamplingInterval: 100, nodeId: "s=Counter", dataType: "UInt32",
        value: { get: () => new Variant({ dataType: DataType.UInt32, value: step }) } });
    namespace.addVariable({ componentOf: plant, browseName: "Setpoint", minimumSamplingInterval: 100, nodeId: "s=Setpoint", dataType: "Double",
        accessLevel: "CurrentRead | CurrentWrite", userAccessLevel: "CurrentRead | CurrentWrite",
        value: {
            get: () => new Variant({ dataType: DataType.Double, value: setpoint }),
            set: (variant) => { setpoint = variant.value; return StatusCodes.Good; },
        } });
    const waveform = namespace.addVariable({ componentOf: plant, browseName: "Waveform", minimumSamplingInterval: 100, nodeId: "s=Waveform", dataType: "Double",
        valueRank: 1, arrayDimensions: [64],
        value: { get: () => new Variant({ dataType: DataType.Double, arrayType: 1, value: Float64Array.from({ length: 64 }, (_, i) => Math.sin(i / 4 + step)) }) } });
    const method = namespace.addMethod(plant, { browseName: "Double", nodeId: "s=Plant.Double",
        inputArguments: [{ name: "x", dataType: DataType.Double }],
        outputArguments: [{ name: "y", dataType: DataType.Double }] });
    method.bindMethod((inputArguments, context, callback) => {
        callback(null, { statusCode: StatusCodes.Good, outputArguments: [{ dataType: DataType.Double, value: inputArguments[0].value * 2 }] });
    });
    setInterval(() => {
        step += 1;
        temperature.touchValue();
        waveform.touchValue();
    }, 100);
    await server.start();
    console.log(`READY ${port}`);
    const stop = async () => { await server.shutdown(0); process.exit(0); };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
}

main().catch((err) => { console.error(err); process.exit(1); });
