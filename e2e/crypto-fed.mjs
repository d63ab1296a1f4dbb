// Two federated engram servers for the end-to-end encryption tests (until
// the shared harness has its own two-server scenario): each server is named
// by its federation address (127.0.0.x:port), serves TLS with a certificate
// from a throwaway CA made with the openssl CLI, and trusts that CA for
// outbound federation (--federation-ca). Client APIs stay on 127.0.0.1.

import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { EngramServer } from "./harness.mjs";

/** A free TCP port on a given loopback address (null if it cannot bind). */
function freePortOn(host) {
    return new Promise((resolve) => {
        const srv = net.createServer();
        srv.unref();
        srv.on("error", () => resolve(null));
        srv.listen(0, host, () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

function openssl(args, cwd) {
    execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

/** Makes a CA and one certificate per IP (IP SAN); returns file paths. */
function makeCerts(dir, ips) {
    openssl(
        ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=engram e2e CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        dir,
    );
    const out = [];
    for (const ip of ips) {
        writeFileSync(path.join(dir, `${ip}.ext`), `subjectAltName=IP:${ip}\nextendedKeyUsage=serverAuth\n`);
        openssl(
            ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", `${ip}.key`,
                "-out", `${ip}.csr`, "-subj", `/CN=${ip}`],
            dir,
        );
        openssl(
            ["x509", "-req", "-in", `${ip}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", `${ip}.crt`, "-days", "2", "-extfile", path.join(dir, `${ip}.ext`)],
            dir,
        );
        out.push({ cert: path.join(dir, `${ip}.crt`), key: path.join(dir, `${ip}.key`) });
    }
    return { ca: path.join(dir, "ca.pem"), certs: out };
}

/**
 * Starts two federated servers; resolves with { servers: [a, b], names,
 * destroy } or with null (and a reason) when this machine cannot host them
 * (no openssl, no 127.0.0.x addresses).
 */
export async function startFederatedPair({ ips = ["127.0.0.7", "127.0.0.8"] } = {}) {
    const dir = await mkdtemp(path.join(os.tmpdir(), "engram-e2e-fed-"));
    const cleanup = () => rm(dir, { recursive: true, force: true }).catch(() => {});
    const ports = [];
    for (const ip of ips) {
        const p = await freePortOn(ip);
        if (!p) {
            await cleanup();
            return { skip: `cannot listen on ${ip}` };
        }
        ports.push(p);
    }
    let certs;
    try {
        certs = makeCerts(dir, ips);
    } catch (e) {
        await cleanup();
        return { skip: `openssl failed: ${e.message}` };
    }
    // Retries of an unreachable destination are capped at 1 s, as in the Go
    // federation test, so a slow start does not stall delivery.
    process.env.ENGRAM_FEDERATION_MAX_BACKOFF ??= "1s";
    const servers = [];
    const names = ips.map((ip, i) => `${ip}:${ports[i]}`);
    try {
        for (let i = 0; i < ips.length; i++) {
            servers.push(
                await EngramServer.create({
                    extraArgs: ["--server-name", names[i], "--federation-listen", names[i], "--tls-cert", certs.certs[i].cert,
                        "--tls-key", certs.certs[i].key, "--federation-ca", certs.ca, ...(process.env.ENGRAM_E2E_FED_DEBUG ? ["--log-level", "debug"] : [])],
                }),
            );
        }
    } catch (e) {
        for (const s of servers) await s.destroy();
        await cleanup();
        throw e;
    }
    return {
        servers,
        names,
        async destroy() {
            for (const s of servers) await s.destroy();
            await cleanup();
        },
    };
}
