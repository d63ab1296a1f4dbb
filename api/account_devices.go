package api

import (
	"errors"
	"unicode/utf8"

	"engram/dag/rooms"
	"engram/projections"
)

// Device management, password change and account deactivation. The
// destructive ones need user-interactive auth with the user's password.

func (s *Server) deviceRoutes() {
	rt := &s.rt
	rt.client("GET", "/devices", authed, s.listDevices)
	rt.client("GET", "/devices/{deviceId}", authed, s.getDevice)
	rt.client("PUT", "/devices/{deviceId}", authed, s.putDevice)
	rt.client("DELETE", "/devices/{deviceId}", authed, s.deleteDevice)
	rt.client("POST", "/delete_devices", authed, s.deleteDevices)
	rt.client("POST", "/account/password", authed, s.changePassword)
	rt.client("POST", "/account/deactivate", authed, s.deactivate)
}

// deviceJSON is the spec's Device object. engram does not track the last
// address a device was seen from; last_seen_ts is the time of its login.
func deviceJSON(id string, d *projections.Device) map[string]any {
	m := map[string]any{"device_id": id, "last_seen_ts": d.LastSeenTS}
	if d.DisplayName != "" {
		m["display_name"] = d.DisplayName
	}
	return m
}

func (s *Server) listDevices(r *Req) error {
	devs, err := s.store.Devices(r.User)
	if err != nil {
		return err
	}
	out := make([]map[string]any, 0, len(devs))
	for i := range devs {
		out = append(out, deviceJSON(devs[i].DeviceID, &devs[i].Device))
	}
	return r.json(map[string]any{"devices": out})
}

func (s *Server) getDevice(r *Req) error {
	id := r.Param("deviceId")
	d, err := s.store.Device(r.User, id)
	if errors.Is(err, projections.ErrNotFound) {
		return errNotFound("Device not found")
	}
	if err != nil {
		return err
	}
	return r.json(deviceJSON(id, d))
}

// checkDeviceName applies Synapse's limit (MAX_DEVICE_DISPLAY_NAME_LEN, in
// characters) with its error.
func checkDeviceName(name string) *Error {
	if utf8.RuneCountInString(name) > maxDeviceNameLen {
		return merr(400, "M_TOO_LARGE", "Device display name is too long (max 100)")
	}
	return nil
}

func (s *Server) putDevice(r *Req) error {
	var b struct {
		DisplayName *string `json:"display_name"`
	}
	if e := r.decode(&b); e != nil {
		return e
	}
	id := r.Param("deviceId")
	if _, err := s.store.Device(r.User, id); errors.Is(err, projections.ErrNotFound) {
		return errNotFound("Device not found")
	} else if err != nil {
		return err
	}
	if b.DisplayName != nil {
		if e := checkDeviceName(*b.DisplayName); e != nil {
			return e
		}
		if err := s.appendRecords(&projections.DeviceNameRecord{UserID: r.User, DeviceID: id, DisplayName: *b.DisplayName}); err != nil {
			return err
		}
	}
	return r.json(struct{}{})
}

// deleteDevice serves DELETE /devices/{deviceId}. As in Synapse, a body that
// is not JSON counts as empty (some clients send none), and deleting a
// device that does not exist succeeds.
func (s *Server) deleteDevice(r *Req) error {
	var b struct {
		Auth *uiaAuth `json:"auth"`
	}
	if e := r.decode(&b); e != nil {
		if e.Code != "M_NOT_JSON" && e.Code != "M_BAD_JSON" {
			return e
		}
		b.Auth = nil
	}
	sess, err := s.reauth(r, b.Auth)
	if sess == nil {
		return err
	}
	if err := s.removeDevices(r.User, []string{r.Param("deviceId")}); err != nil {
		return err
	}
	return r.json(struct{}{})
}

func (s *Server) deleteDevices(r *Req) error {
	var b struct {
		Devices *[]string `json:"devices"`
		Auth    *uiaAuth  `json:"auth"`
	}
	if e := r.decode(&b); e != nil {
		return e
	}
	if b.Devices == nil {
		return errMissing("Missing params: devices")
	}
	sess, err := s.reauth(r, b.Auth)
	if sess == nil {
		return err
	}
	if err := s.removeDevices(r.User, *b.Devices); err != nil {
		return err
	}
	return r.json(struct{}{})
}

// removeDevices logs the user's existing devices among ids out, in one batch.
func (s *Server) removeDevices(user string, ids []string) error {
	var recs []any
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		if _, err := s.store.Device(user, id); errors.Is(err, projections.ErrNotFound) {
			continue
		} else if err != nil {
			return err
		}
		recs = append(recs, &projections.LogoutRecord{UserID: user, DeviceID: id})
	}
	if len(recs) == 0 {
		return nil
	}
	return s.appendRecords(recs...)
}

func (s *Server) changePassword(r *Req) error {
	var b struct {
		NewPassword   *string  `json:"new_password"`
		LogoutDevices *bool    `json:"logout_devices"`
		Auth          *uiaAuth `json:"auth"`
	}
	if e := r.decode(&b); e != nil {
		return e
	}
	// Checked before auth, as Synapse does, so a bad password costs no retry.
	if b.NewPassword != nil && len(*b.NewPassword) > 512 {
		return errInvalid("Invalid password")
	}
	sess, err := s.reauth(r, b.Auth)
	if sess == nil {
		return err
	}
	if b.NewPassword == nil || *b.NewPassword == "" {
		return errMissing("Missing params: password")
	}
	hash, err := s.accounts.hash(*b.NewPassword)
	if err != nil {
		return err
	}
	recs := []any{&projections.PasswordRecord{UserID: r.User, PasswordHash: hash}}
	// spec: logout_devices defaults to true; the requesting device stays.
	if b.LogoutDevices == nil || *b.LogoutDevices {
		devs, err := s.store.Devices(r.User)
		if err != nil {
			return err
		}
		for _, d := range devs {
			if d.DeviceID != r.Device {
				recs = append(recs, &projections.LogoutRecord{UserID: r.User, DeviceID: d.DeviceID})
			}
		}
	}
	if err := s.appendRecords(recs...); err != nil {
		return err
	}
	return r.json(struct{}{})
}

// deactivate serves POST /account/deactivate. The account is marked
// deactivated and every device logged out in one batch (so nothing can log in
// or act for it while it leaves its rooms), then the user leaves every room
// it is joined to, invited to or knocking on, with ordinary membership
// events.
func (s *Server) deactivate(r *Req) error {
	var b struct {
		Auth     *uiaAuth `json:"auth"`
		Erase    bool     `json:"erase"`
		IDServer string   `json:"id_server"`
	}
	if e := r.decode(&b); e != nil {
		return e
	}
	sess, err := s.reauth(r, b.Auth)
	if sess == nil {
		return err
	}
	if err := s.deactivateUser(r.User, b.Erase); err != nil {
		return err
	}
	return r.json(map[string]string{"id_server_unbind_result": "no-support"})
}

// deactivateUser closes an account: deactivated and logged out everywhere
// in one batch, then out of its rooms.
func (s *Server) deactivateUser(user string, erase bool) error {
	if err := s.appendRecords(
		&projections.LogoutRecord{UserID: user, All: true},
		&projections.DeactivateRecord{UserID: user, Erase: erase, TS: nowMS()},
	); err != nil {
		return err
	}
	s.leaveAllRooms(user)
	return nil
}

// leaveAllRooms sends a leave for every room the user is joined to, invited
// to or knocking on. Failures are logged: the account is already closed.
func (s *Server) leaveAllRooms(user string) {
	urs, err := s.store.UserRooms(user)
	if err != nil {
		s.logger.Error("deactivate: listing rooms", "user", user, "err", err)
		return
	}
	var targets []string
	for _, ur := range urs {
		switch ur.Membership {
		case projections.MemberJoin, projections.MemberInvite, projections.MemberKnock:
			targets = append(targets, ur.RoomID)
		}
	}
	inParallel(targets, func(room string) {
		if _, err := s.rooms.Send(rooms.Event{Room: room, Sender: user, Type: "m.room.member",
			StateKey: str(user), Content: mustJSON(map[string]any{"membership": "leave"})}); err != nil {
			s.logger.Warn("deactivate: leaving room", "user", user, "room", room, "err", err)
		}
	})
}
