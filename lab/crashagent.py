"""The agent with a death planted in its handling of an MQTT command, for the durability tests
(tests/e2e/test_mqtt_durability.py):

    python -m lab.crashagent CONFIG --die before-store|between [--ack-first]

It runs as `ota-agent run` does, except that when a command arrives on its topic the process
is killed (SIGKILL: nothing flushed, nothing acknowledged on the way out):

- `before-store`: just before the command is written to disk;
- `between`: just after the first of the two steps, storing the command and acknowledging it
  to the broker.

Without `--ack-first` the agent's own handling runs unchanged; only the death is added.
`--ack-first` swaps the two steps (acknowledge in paho's callback, store a moment later, as an
agent that acks first would): the mutant each durability test must catch.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from agent.config import load_config
from agent.daemon import AgentDaemon, build_agent
from wire import Command, device_cmd_topic

log = logging.getLogger("lab.crashagent")
ACK_FLUSH_S = 0.5  # paho's network thread sends the acknowledgement after the callback
DEATHS = ("before-store", "between")


def die_now(why: str) -> None:
    log.info("crash harness: killed %s", why)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def plant_death(daemon: AgentDaemon, die: str) -> None:
    """Kill the process around the agent's own store of a command."""
    store = daemon._store_command

    def dying_store(command: Command) -> bool:
        if die == "before-store":
            die_now(f"before storing command {command.command_id}")
        stored = store(command)
        if die == "between":
            die_now(f"after storing command {command.command_id}, before the ack")
        return stored

    daemon._store_command = dying_store  # type: ignore[method-assign]


def ack_first(daemon: AgentDaemon, die: str) -> None:
    """The mutant: acknowledge to the broker first, store a moment later."""
    doorbell = daemon.doorbell
    assert doorbell is not None, "the config has no broker_url"
    commands = device_cmd_topic(daemon.config.device_id)

    def handle(client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        client.ack(msg.mid, msg.qos)
        threading.Timer(ACK_FLUSH_S, store_later, args=(msg.topic, bytes(msg.payload))).start()

    def store_later(topic: str, payload: bytes) -> None:
        if die == "between" and topic == commands:
            die_now("after the ack, before storing the command")
        daemon._heard(topic, payload)

    doorbell._client.on_message = handle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--die", choices=DEATHS, required=True)
    parser.add_argument("--ack-first", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    daemon = AgentDaemon(config, build_agent(config))
    plant_death(daemon, args.die)
    if args.ack_first:
        ack_first(daemon, args.die)
    daemon.run(threading.Event())  # until the planted death
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
