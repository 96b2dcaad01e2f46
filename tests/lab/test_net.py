"""free_port hands out no port twice in a process: a cluster's plan of a dozen ports once
gave one NATS node the same port for MQTT and routes, and the node would not start."""

from __future__ import annotations

import socket

from lab.net import LOOPBACK, free_port


def test_five_hundred_ports_in_a_row_are_all_different() -> None:
    # bind(0) alone repeats itself here: 500 draws from ~14,000 ports collide with
    # probability ~1 - e^-9 (the birthday bound)
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)


def test_a_port_handed_out_is_free_to_listen_on() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind((LOOPBACK, port))
        s.listen()
