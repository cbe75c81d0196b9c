"""`qwen-stream serve` past loopback, tried on loopback: HTTPS with a self-signed certificate made here, several API
keys (repeated --api-key and --api-key-file, any one opens), the official openai client over TLS, and no key ever
in the server's output, even the wrong ones clients send."""

from __future__ import annotations

import datetime
import ipaddress
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.live_server import free_port

pytestmark = pytest.mark.cold  # a `qwen-stream serve` process: the cold tier (tests/conftest.py)

KEYS = ("k-one-7f3a", "k-two-91bd", "k-file-c44e")
WRONG = "k-wrong-0000"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A key and a certificate for 127.0.0.1 and localhost, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qwen-stream test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    names = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1)).add_extension(names, critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path, cert_path = folder / "key.pem", folder / "cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def test_https_with_several_keys_and_no_key_in_the_output(tiny_model_dir: Path, tmp_path: Path) -> None:
    key_path, cert_path = self_signed(tmp_path)
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"# the team's key\n\n{KEYS[2]}\n")
    port = free_port()
    cmd = [sys.executable, "-m", "qwen_stream.cli.main", "serve", "--model", str(tiny_model_dir), "--runner",
           "torch", "--context-length", "256", "--max-batch-size", "2", "--port", str(port), "--log-level", "info",
           "--served-model-name", "m", "--api-key", KEYS[0], "--api-key", KEYS[1], "--api-key-file", str(key_file),
           "--ssl-keyfile", str(key_path), "--ssl-certfile", str(cert_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"https://127.0.0.1:{port}"
    trusted = ssl.create_default_context(cafile=str(cert_path))
    try:
        _wait_ready(url, trusted, proc)
        with pytest.raises(httpx.ConnectError):  # the certificate is not one the system trusts
            httpx.get(f"{url}/health", timeout=10)
        with httpx.Client(verify=trusted, timeout=60) as http:
            for key in (None, WRONG):
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                refused = http.post(f"{url}/v1/chat/completions", headers=headers, json={"messages": []})
                assert refused.status_code == 401 and WRONG not in refused.text
            for key in KEYS:
                with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0,
                                   http_client=httpx.Client(verify=trusted, timeout=60)) as client:
                    answer = client.chat.completions.create(model="m", max_tokens=2,
                                                            messages=[{"role": "user", "content": "hi"}])
                assert answer.choices[0].finish_reason in ("stop", "length")
            assert http.post(f"{url}/completion", headers={"x-api-key": KEYS[2]},
                             json={"prompt": "hi", "n_predict": 1}).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert f"{url}/v1" in output  # it says where, with https
    assert not any(secret in output for secret in (*KEYS, WRONG)), output


def test_tls_and_key_flags_are_checked_before_anything_loads(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("# no key yet\n")
    for flags, says in ((["--ssl-keyfile", str(empty)], "needs both"),
                        (["--ssl-keyfile", "/nope.pem", "--ssl-certfile", "/nope.pem"], "no such file"),
                        (["--api-key-file", str(empty)], "holds no key"), (["--api-key", " "], "must not be empty")):
        done = subprocess.run([sys.executable, "-m", "qwen_stream.cli.main", "serve", *flags], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode != 0 and says in done.stderr, done.stderr


def _wait_ready(url: str, trusted: ssl.SSLContext, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 180  # a fresh interpreter imports torch and transformers
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            if httpx.get(f"{url}/health", verify=trusted, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)
    raise AssertionError("the server never became ready")
