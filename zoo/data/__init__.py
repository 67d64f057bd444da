"""LightningDataModules: one module (or package) per dataset family, one shared loader base.

    base.py         BatchStream (the deterministic, resumable training stream) and StreamDataModule,
                    the base every family derives from: it owns train/val/test loaders, workers and
                    the stream's resume state; a family supplies make_batch, batches_per_pass and
                    eval_dataset
    download.py     sha256-checked downloads into the zoo cache; MissingExtra for optional extras
    text.py         pydoc, python_stdlib, text_files, tinyshakespeare (token caches under tokens/)
    image/          arrays (digits, mnist5k), torchvision_sets (mnist, fashion_mnist, cifar10), folder
    music/          performance (midi_folder, maestro), bach (music21's chorales), jsb (the grid)
    text_image/     synthetic (captioned_digits, captioned_shapes), folder (image_text_folder)

Each family package re-exports its public names, so `zoo.data.image.DigitsDataModule` and the other
`_target_`s in conf/data and in saved checkpoints keep naming the same classes.
"""
