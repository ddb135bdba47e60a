"""
Import an Azure Application Gateway definition into agw's INI configuration.

    agw-import-arm template.json > gw.ini
    agw-import-arm --tls-dir /etc/agw/tls --parameters params.json template.json
    az network application-gateway show -g RG -n GW | agw-import-arm - > gw.ini

The input is one of:

  - an ARM template: C{resources[]} holding a resource of type
    C{Microsoft.Network/applicationGateways} (also inside nested
    C{Microsoft.Resources/deployments} templates, and with Bicep's
    symbolic-name C{resources} object);
  - the JSON of C{az network application-gateway show} (the gateway's
    properties flattened into the top-level object, as the CLI prints them)
    or of C{az resource show} / the REST API (a top-level object with
    C{properties}); a list of them (C{az network application-gateway list})
    works with C{--gateway NAME}.

ARM template expressions are evaluated as far as they can be without a
deployment: C{parameters()} (from C{--parameters FILE}, else the template's
C{defaultValue}), C{variables()}, C{concat()}, C{format()}, C{resourceId()},
C{if()} and the usual string, logical and array functions.  What depends on
the deployment (C{subscription()}, C{resourceGroup()}, C{uniqueString()},
C{reference()}, ...) or on a parameter without a value stays unresolved:
such a setting is listed as C{NOT CONVERTED} with the reason, except in
names and references, where only the last path segment matters and the
parameter's name stands in for its value (with a comment saying so).

References (C{{"id": ...}}) are resolved to names by their last path
segment, whether the id is a full C{/subscriptions/...} resource id or an
ARM expression such as
C{[concat(variables('applicationGatewayID'), '/httpListeners/NAME')]} or
C{[resourceId('Microsoft.Network/applicationGateways/httpListeners',
parameters('gw'), 'NAME')]}; an expression that cannot be evaluated falls
back to its last quoted string argument.

Nothing is dropped silently.  Whatever agw cannot express (WAF, SKU and
autoscale, frontend IP configurations, Key Vault and PFX certificate data,
per-listener WAF policies, URL rewrites, unresolvable parameters, ...) is
listed in a C{; NOT CONVERTED: ...} comment, at the top of the output for the
gateway as a whole, in its section otherwise.  A section that cannot work
without something that was not converted (a rule whose listener could not
be converted, say) is written out commented, after a C{NOT CONVERTED} line
that says why.  Read-only bookkeeping (C{id}, C{etag}, C{provisioningState},
back-references such as a probe's list of settings that use it) carries no
configuration and is skipped.

Certificates cannot be converted: Azure holds them as PFX data or Key Vault
secrets.  Each C{[sslCertificate:N]} points at C{TLSDIR/N.pem} and
C{TLSDIR/N.key}, each C{[trustedRootCertificate:N]} at C{TLSDIR/N.crt}, each
C{[trustedClientCertificate:N]} at C{TLSDIR/N.ca.pem}, with a comment that
says how to export the certificate there.

SSL policies (the gateway's C{sslPolicy} and each C{sslProfiles} entry's)
keep Azure's names (L{agwtx.config.sslpolicy}).  A gateway without an C{sslPolicy}
gets agw's default, C{AppGwSslPolicy20220101}, which is Azure's for API
versions from 2023-02-01; for an older C{apiVersion} a comment in
C{[gateway]} says that Azure's default there was C{AppGwSslPolicy20150501}.

The output is deterministic: sections by kind in the order of
L{SECTION_ORDER}, within a kind in the order of the input.  Names that are
not valid agw names (1..80 of C{A-Z a-z 0-9 _ . -}) are sanitised, with a
comment giving the Azure name.
"""

from __future__ import annotations

from agwtx.tools.armimport.cli import main
from agwtx.tools.armimport.base import SECTION_ORDER
from agwtx.tools.armimport.convert import DEFAULT_TLS_DIR, convert
from agwtx.tools.armimport.evaluate import ArmEvaluator
from agwtx.tools.armimport.read import ArmImportError, FoundGateway, findGateways, loadJson

__all__ = [
    "DEFAULT_TLS_DIR",
    "SECTION_ORDER",
    "ArmEvaluator",
    "ArmImportError",
    "FoundGateway",
    "convert",
    "findGateways",
    "loadJson",
    "main",
]
