"""Model code written for this project, with parameter names matching the official checkpoints.

* :mod:`.vit_encoder` - SAM ViT image encoder (MedSAM uses ViT-B);
* :mod:`.tiny_vit` - the TinyViT encoder of LiteMedSAM;
* :mod:`.prompt_encoder`, :mod:`.mask_decoder` - SAM's prompt encoder and two-way-transformer mask decoder;
* :mod:`.sam` - the assembled model and configurations (``vit_b``, ``lite``, reduced test configs);
* :mod:`.universeg` - UniverSeg v1;
* :mod:`.loader` - strict, checked loading of checkpoints.
"""
