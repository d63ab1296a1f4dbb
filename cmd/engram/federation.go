package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"engram/api"
	"engram/api/federation"
	"engram/dag"
	"engram/dag/rooms"
)

// startFederation opens the TLS federation listener (--federation-listen,
// --tls-cert, --tls-key), starts the outbound sender and hooks remote joins
// into the client API. It returns a function that stops it all.
func startFederation(cfg Config, n *node, seq *rooms.Sequencer, srv *api.Server, key dag.SigningKey, logger *slog.Logger) (func(), error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("federation TLS: %w", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if cfg.FederationCA != "" {
		pem, err := os.ReadFile(cfg.FederationCA)
		if err != nil {
			return nil, fmt.Errorf("--federation-ca: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--federation-ca: no certificate in %s", cfg.FederationCA)
		}
	}
	// ENGRAM_FEDERATION_MAX_BACKOFF caps retry intervals (tests use seconds).
	var maxBackoff time.Duration
	if v := os.Getenv("ENGRAM_FEDERATION_MAX_BACKOFF"); v != "" {
		if maxBackoff, err = time.ParseDuration(v); err != nil {
			return nil, fmt.Errorf("ENGRAM_FEDERATION_MAX_BACKOFF: %w", err)
		}
	}
	fed := federation.New(federation.Config{
		ServerName: cfg.ServerName, Key: key, RootCAs: roots, MaxBackoff: maxBackoff, Logger: logger,
	}, n.log, n.store, seq)
	// Retired signing keys and notaries (rotate_key.go); space hierarchy.
	if err := configureFederationKeys(cfg, fed); err != nil {
		return nil, err
	}
	fed.SetHierarchy(srv.FedHierarchy)
	ln, err := net.Listen("tcp", cfg.FederationListen)
	if err != nil {
		return nil, err
	}
	tln := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err := fed.Run(); err != nil {
		ln.Close()
		return nil, err
	}
	srv.SetRemoteJoin(fed.Join)
	srv.SetFederation(fed)
	fed.SetPublicRooms(srv.FedPublicRooms)
	fed.HandleEDU("m.typing", srv.FedTyping)
	fed.HandleEDU("m.receipt", srv.FedReceipt)
	fed.HandleEDU("m.presence", srv.FedPresence)
	// End-to-end encryption (api/e2ee_remote.go, api/federation/e2ee.go).
	fed.SetE2EE(srv)
	srv.SetE2EEFederation(fed.Client().Do)
	fed.HandleEDU("m.direct_to_device", srv.FedToDevice)
	fed.HandleEDU("m.device_list_update", srv.FedDeviceListUpdate)
	fed.HandleEDU("m.signing_key_update", srv.FedSigningKeyUpdate)
	srv.AddMetric(api.Gauge{Name: "engram_federation_destinations", Help: "Destinations with an outbound queue worker.",
		Read: func() float64 { return float64(fed.QueueStats().Destinations) }})
	srv.AddMetric(api.Gauge{Name: "engram_federation_queue_records", Help: "Log records the outbound workers still have to scan, summed over destinations.",
		Read: func() float64 { return float64(fed.QueueStats().Behind) }})
	srv.AddMetric(api.Gauge{Name: "engram_federation_queue_edus", Help: "Ephemeral EDUs (typing, presence) waiting to be sent.",
		Read: func() float64 { return float64(fed.QueueStats().EDUs) }})
	go func() {
		if err := fed.Serve(tln); err != nil {
			logger.Error("federation listener failed", "err", err)
		}
	}()
	logger.Info("federation serving", "addr", "https://"+ln.Addr().String())
	return fed.Shutdown, nil
}
