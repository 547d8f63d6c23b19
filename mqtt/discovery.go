package mqtt

// Home Assistant MQTT discovery: one label sensor and one "disease
// detected" binary sensor per camera, grouped under one device.

type haDevice struct {
	Identifiers  []string `json:"identifiers"`
	Name         string   `json:"name"`
	Model        string   `json:"model"`
	Manufacturer string   `json:"manufacturer"`
	SWVersion    string   `json:"sw_version,omitempty"`
}

type haConfig struct {
	Name                string   `json:"name"`
	UniqueID            string   `json:"unique_id"`
	ObjectID            string   `json:"object_id"`
	StateTopic          string   `json:"state_topic"`
	ValueTemplate       string   `json:"value_template,omitempty"`
	JSONAttributesTopic string   `json:"json_attributes_topic,omitempty"`
	AvailabilityTopic   string   `json:"availability_topic"`
	PayloadAvailable    string   `json:"payload_available"`
	PayloadNotAvailable string   `json:"payload_not_available"`
	DeviceClass         string   `json:"device_class,omitempty"`
	PayloadOn           string   `json:"payload_on,omitempty"`
	PayloadOff          string   `json:"payload_off,omitempty"`
	Icon                string   `json:"icon,omitempty"`
	UnitOfMeasurement   string   `json:"unit_of_measurement,omitempty"`
	StateClass          string   `json:"state_class,omitempty"`
	CommandTopic        string   `json:"command_topic,omitempty"`
	PayloadInstall      string   `json:"payload_install,omitempty"`
	EntityCategory      string   `json:"entity_category,omitempty"`
	Device              haDevice `json:"device"`
}

// DiscoveryMessages returns the retained discovery configs for the given
// cameras, keyed by topic.
func DiscoveryMessages(cfg Config, cameras []string, swVersion string) map[string][]byte {
	t := NewTopics(cfg.Prefix, cfg.Device)
	dev := haDevice{Identifiers: []string{"leafwatch_" + cfg.Device}, Name: "Leafwatch " + cfg.Device,
		Model: "Leafwatch leaf-disease camera", Manufacturer: "Leafwatch", SWVersion: swVersion}
	out := map[string][]byte{}
	// The samples waiting for a label, device-wide: a card in Home
	// Assistant says when there is labelling to do (and where).
	out[cfg.Discovery.Prefix+"/sensor/"+cfg.Device+"/samples_waiting/config"] = mustJSON(haConfig{
		Name: "samples waiting for a label", UniqueID: "leafwatch_" + cfg.Device + "_samples_waiting", ObjectID: "leafwatch_" + cfg.Device + "_samples_waiting",
		StateTopic: t.Samples(), ValueTemplate: "{{ value_json.waiting }}", JSONAttributesTopic: t.Samples(),
		AvailabilityTopic: t.Availability(), PayloadAvailable: Online, PayloadNotAvailable: Offline,
		Icon: "mdi:tag-multiple", UnitOfMeasurement: "samples", StateClass: "measurement", Device: dev,
	})
	// The model as an update entity: installed and offered versions,
	// progress, and an Install button (payload_install) for devices with
	// models.auto_install off. The state topic's JSON carries Home
	// Assistant's keys; the rest (state, reason, acceptance) are
	// attributes.
	out[cfg.Discovery.Prefix+"/update/"+cfg.Device+"/model/config"] = mustJSON(haConfig{
		Name: "leaf model", UniqueID: "leafwatch_" + cfg.Device + "_model", ObjectID: "leafwatch_" + cfg.Device + "_model",
		StateTopic: t.Update(), JSONAttributesTopic: t.Update(), CommandTopic: t.Command(CmdInstall), PayloadInstall: "{}",
		AvailabilityTopic: t.Availability(), PayloadAvailable: Online, PayloadNotAvailable: Offline,
		DeviceClass: "firmware", EntityCategory: "config", Device: dev,
	})
	for _, cam := range cameras {
		id := cfg.Device + "_" + cam
		out[cfg.Discovery.Prefix+"/sensor/"+cfg.Device+"/"+cam+"_label/config"] = mustJSON(haConfig{
			Name: cam + " leaf label", UniqueID: "leafwatch_" + id + "_label", ObjectID: "leafwatch_" + id + "_label",
			StateTopic: t.State(cam), ValueTemplate: "{{ value_json.display }}", JSONAttributesTopic: t.State(cam),
			AvailabilityTopic: t.Availability(), PayloadAvailable: Online, PayloadNotAvailable: Offline,
			Icon: "mdi:leaf", Device: dev,
		})
		out[cfg.Discovery.Prefix+"/binary_sensor/"+cfg.Device+"/"+cam+"_disease/config"] = mustJSON(haConfig{
			Name: cam + " disease detected", UniqueID: "leafwatch_" + id + "_disease", ObjectID: "leafwatch_" + id + "_disease",
			StateTopic: t.State(cam), ValueTemplate: "{{ 'ON' if value_json.disease else 'OFF' }}",
			AvailabilityTopic: t.Availability(), PayloadAvailable: Online, PayloadNotAvailable: Offline,
			DeviceClass: "problem", PayloadOn: "ON", PayloadOff: "OFF", Device: dev,
		})
	}
	return out
}

func (p *Publisher) publishDiscovery() {
	p.mu.Lock()
	cams, sw := append([]string(nil), p.cameras...), p.swVersion
	p.mu.Unlock()
	for topic, payload := range DiscoveryMessages(p.cfg, cams, sw) {
		p.client.Publish(topic, 1, true, payload)
	}
}
