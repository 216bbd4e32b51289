"""Built-in datasets, one module each. Datasets that read the user's own files (``folder``,
``csv``) take the data's licence and citation as parameters (:func:`terms_field`)."""

import facelab


def terms_field(what: str):
    """An optional ``licence`` or ``citation`` parameter: the user declares it for their data
    and the run's model card shows it ("not declared" otherwise)."""
    return facelab.field(None, f"the data's {what}, as the model card should state it "
                               "(default: not declared)", min_length=1)


#: ``register(..., **DECLARED_TERMS)`` for datasets with ``licence`` and ``citation`` parameters.
DECLARED_TERMS = {"licence": lambda params: params.licence,
                  "citation": lambda params: params.citation}
