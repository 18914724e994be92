-- Replay looks up what one raw event caused: its audit trail steps and the
-- commands it queued, in insertion order.
CREATE INDEX trace_steps_cause ON trace_steps (cause_event, seq);
CREATE INDEX outbox_commands_cause ON outbox_commands (cause_event, seq);
