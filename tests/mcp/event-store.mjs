// An in-memory event store for the SDK's Streamable HTTP server transport, so its streams can be
// resumed with Last-Event-ID. Ids are a per-session counter: unique across all of the session's
// streams, as the specification requires.
export class EventStore {
  #events = [];
  #next = 0;

  async storeEvent(streamId, message) {
    this.#next += 1;
    const eventId = `ev-${this.#next}`;
    this.#events.push({ eventId, streamId, message });
    return eventId;
  }

  async getStreamIdForEventId(eventId) {
    return this.#events.find((e) => e.eventId === eventId)?.streamId;
  }

  // Sends the events of lastEventId's stream stored after it, in order. Priming events (an
  // empty message) carry only an id and are not replayed.
  async replayEventsAfter(lastEventId, { send }) {
    const at = this.#events.findIndex((e) => e.eventId === lastEventId);
    if (at < 0) throw new Error(`unknown event id ${lastEventId}`);
    const { streamId } = this.#events[at];
    for (const e of this.#events.slice(at + 1)) {
      if (e.streamId === streamId && Object.keys(e.message).length > 0) await send(e.eventId, e.message);
    }
    return streamId;
  }
}
