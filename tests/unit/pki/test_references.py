"""Where a configuration names a certificate (issue 4: deleting a referenced certificate is
refused, naming every reference)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import PkiError
from gateway.pki.references import find_references, load_references

DOCUMENT = {
    "client_proxies": [{"name": "outbound", "signing_certificate": "corp"}],
    "server_proxies": [{"name": "web", "certificates": ["shop", "corp"]}, {"name": "mail", "certificates": "bad"}],
    "trust_stores": [{"name": "partners", "ca_certificates": ["partner-root", "corp"]}, "junk"],
}


def test_every_reference_is_found_with_its_path() -> None:
    assert [r.path for r in find_references(DOCUMENT, "corp")] == [
        "client_proxies[0].signing_certificate",
        "server_proxies[0].certificates[1]",
        "trust_stores[0].ca_certificates[1]",
    ]
    assert "client proxy 'outbound'" in str(find_references(DOCUMENT, "corp")[0])


@pytest.mark.parametrize("document", [DOCUMENT, None, [], {"server_proxies": "x"}],
                         ids=["unreferenced", "empty", "not-a-mapping", "wrong-shape"])
def test_no_reference(document: object) -> None:
    assert find_references(document, "nobody") == ()


def test_a_file_that_is_not_yaml_is_an_error_not_silence(tmp_path: Path) -> None:
    path = tmp_path / "tlsgw.yaml"
    path.write_text("server_proxies: [unclosed\n")
    with pytest.raises(PkiError, match="not valid YAML"):
        load_references(path, "corp")
    with pytest.raises(PkiError, match="cannot read"):
        load_references(tmp_path / "absent.yaml", "corp")
